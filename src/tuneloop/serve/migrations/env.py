"""Alembic environment for the serve store: migrations run on the connection store.migrate passes in."""

from alembic import context

from tuneloop.serve.store import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
