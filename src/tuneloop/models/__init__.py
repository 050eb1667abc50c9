"""Models: the offline registry, loading, export, and what runs a model over batches (generation, scoring)."""
