"""The web UI (`tuneloop ui`): FastAPI with server-rendered Jinja2 pages over a workspace of run directories."""
