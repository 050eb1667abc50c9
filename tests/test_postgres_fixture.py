"""The throwaway PostgreSQL server the store and search tests rely on really runs and isolates databases."""

from __future__ import annotations


def test_postgres_server_gives_each_test_its_own_empty_database(postgres_server, postgres_url):
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE probe (value integer)"))
        connection.execute(text("INSERT INTO probe VALUES (7)"))
        assert connection.execute(text("SELECT sum(value) FROM probe")).scalar() == 7
        assert connection.execute(text("SELECT version()")).scalar().startswith("PostgreSQL")
    engine.dispose()

    other = create_engine(postgres_server.create_database())
    with other.begin() as connection:
        tables = connection.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'probe'")).scalar()
    other.dispose()
    assert tables == 0
