"""Hyperparameter search: an Optuna study whose trials are ordinary tuneloop runs (see docs/search.md)."""
