"""Training: trainer (fit: one run on a benchmark, from parts (loss, optimiser, schedule, AMP, DDP) and
checkpoint (early stopping, resume)), recipe (configs), runs (the torch-free on-disk registry), jobs
(training as a background process for the app) and ensemble (seeds of one config)."""
