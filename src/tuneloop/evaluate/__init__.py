"""Scoring a run: the evaluate stage and its per-task stages, metrics, statistics, the judge and the safety gate."""
