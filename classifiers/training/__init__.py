"""Training data for the harm-classification head: see `sources.load_examples`."""
