"""One file per training method: setup, the trainer call, and what every recipe does after (train.fit)."""
