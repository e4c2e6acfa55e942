"""One chain, in memory: generations as named steps, regimes, curation, metrics, FLOPs. No Ray."""
