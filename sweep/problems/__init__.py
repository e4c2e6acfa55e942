"""What a chain learns from: data sources (truth-lm, text), the model families and their metrics, the rules scorer."""
