"""Training: trainer (fit: one run on a benchmark), runs (the on-disk registry and load_run),
jobs (training as a background process for the app) and ensemble (seeds of one config)."""
