"""The run directory's records: the ledger (source of truth) and the results views derived from it."""
