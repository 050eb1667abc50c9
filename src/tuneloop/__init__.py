"""tuneloop: fine-tune language models end to end (data, training, evaluation against the baseline, chat, export)."""

__version__ = "0.1.0"
