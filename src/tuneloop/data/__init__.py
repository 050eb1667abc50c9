"""Data: loading and formats, the workbench (audit, dedup, privacy, augment, split) and the shared text helpers."""
