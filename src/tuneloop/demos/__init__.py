"""The demo data writers: quickstart (the Brambleway facts), preferences, arithmetic (GRPO) and loop_users."""
