"""Shared training pieces: Trainer arguments, the fit loop, callbacks, the fast path, model setup, guards, rewards."""
