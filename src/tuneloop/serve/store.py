"""The request and feedback store: SQLAlchemy models, migrations at open, and the writes the server makes.

One row per request (prompt messages, reply, which model id, run, adapter version and A/B variant answered,
token counts, latency, status), one per piece of feedback (a rating, correction or comment on one reply, or
a preference between two) and one per `tuneloop loop` (its lease and saved state). SQLite by default (WAL,
synchronous=FULL: a committed row survives a killed process and a power cut), PostgreSQL for several server
processes. Every write commits before the server answers, so whatever a client saw acknowledged is in the
store. PII is redacted before writing unless the server runs with --store-raw. The next stage of the loop
(feedback export) reads these tables as training data.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tuneloop.errors import ConfigError, TuneloopError

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # chatcmpl-... / cmpl-..., the response id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    endpoint: Mapped[str] = mapped_column(String(16))  # chat | completion
    model: Mapped[str | None] = mapped_column(String(200), index=True)  # the name the client asked for
    variant: Mapped[str | None] = mapped_column(String(200), index=True)  # the model id that answered
    run_dir: Mapped[str | None] = mapped_column(Text)
    base_model: Mapped[str | None] = mapped_column(Text)
    adapter: Mapped[str | None] = mapped_column(Text)
    adapter_version: Mapped[str | None] = mapped_column(String(64))  # sha256 prefix of the weights
    user_hash: Mapped[str | None] = mapped_column(String(64))
    messages: Mapped[list | None] = mapped_column(JSON)  # chat: the prompt messages
    prompt: Mapped[str | None] = mapped_column(Text)  # completion: the prompt text
    params: Mapped[dict | None] = mapped_column(JSON)  # temperature, top_p, max_tokens, stop, seed, stream
    reply: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_s: Mapped[float | None] = mapped_column(Float)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer, default=200)  # the HTTP status the client got
    error: Mapped[str | None] = mapped_column(Text)
    redacted: Mapped[bool] = mapped_column(Boolean, default=True)
    pii: Mapped[dict | None] = mapped_column(JSON)  # {kind: count} found (and replaced unless raw)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # rating | pairwise
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)  # the rated reply, or id_a
    other_request_id: Mapped[str | None] = mapped_column(ForeignKey("requests.id"))  # pairwise: id_b
    preferred_request_id: Mapped[str | None] = mapped_column(String(64))  # pairwise: the winner; None for a tie
    rating: Mapped[str | None] = mapped_column(String(8))  # up | down | 1..5 as sent
    score: Mapped[float | None] = mapped_column(Float)  # the rating on [0, 1]
    correction: Mapped[str | None] = mapped_column(Text)  # the reply the user wanted instead
    comment: Mapped[str | None] = mapped_column(Text)
    user_hash: Mapped[str | None] = mapped_column(String(64))
    # The UI's feedback inbox (migration 0002): `feedback export --reviewed` takes only accepted rows.
    review: Mapped[str | None] = mapped_column(String(16))  # None (not reviewed) | accepted | discarded
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    original_correction: Mapped[str | None] = mapped_column(Text)  # the user's words when a reviewer edited them


class LoopRow(Base):
    """One `tuneloop loop` by name: who holds its lease (tuneloop.feedback.loop_lease) and the state it saved."""

    __tablename__ = "loops"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))  # host:pid:nonce; None once released
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat: Mapped[float | None] = mapped_column(Float)  # epoch seconds: a float compares alike in every dialect
    state: Mapped[dict | None] = mapped_column(JSON)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PromotionRow(Base):
    """One promote or rollback a replica took; the newest row per model is the version every replica serves."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(16))  # promote | rollback
    run_dir: Mapped[str] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    replica: Mapped[str | None] = mapped_column(String(200))


def store_url(value: str | None, default_dir: Path) -> str:
    """A SQLAlchemy URL from --store: a URL as given, a file path as SQLite, nothing as serve.db in default_dir."""
    if not value:
        return f"sqlite:///{(default_dir / 'serve.db').resolve()}"
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).resolve()}"


def open_engine(url: str):
    """A SQLAlchemy engine with the store's SQLite settings, and the schema migrated to the newest version."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        engine = create_engine(url, pool_pre_ping=True, **({"pool_size": 10, "max_overflow": 20}
                                                            if url.startswith("postgresql") else {}))
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"--store {url!r}: {exc}. Use a file path (SQLite) or "
                          "postgresql+psycopg://user:password@host/db.") from None
    if engine.dialect.name == "sqlite":
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_settings(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (monitor) never block the server's writes
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    migrate(engine)
    return engine


def migrate(engine) -> None:
    """Bring the schema to Alembic's head revision (creates the tables in an empty database)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import OperationalError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise ConfigError(f"--store {engine.url.render_as_string(hide_password=True)}: cannot open the database: "
                          f"{exc.orig}") from None


def redact(text: str | None, counts: Counter, raw: bool) -> str | None:
    """text as stored: PII replaced (counted into counts), or unchanged but still counted when raw.

    A NUL character becomes U+FFFD either way: PostgreSQL's text cannot hold one (a small model's byte-level
    decoding emits it now and then), and refusing the row would lose a reply the client is about to get.
    """
    from tuneloop.data.privacy import find_pii, redact_pii

    if not text:
        return text
    text = text.replace("\x00", "\ufffd")
    if raw:
        counts.update(f.kind for f in find_pii(text))
        return text
    redacted, findings = redact_pii(text)
    counts.update(f.kind for f in findings)
    return redacted


class UnknownRequest(LookupError):
    """Feedback named a response id that is not in the store."""


class StoreUnavailable(TuneloopError):
    """The database did not take a write (PostgreSQL down or restarting, SQLite locked): nothing was kept."""


RETRY_AFTER_S = 2  # what a 503 for an unavailable store tells clients to wait; pool_pre_ping reconnects by then


@contextmanager
def writing(engine):
    """A session whose commit either happens or raises StoreUnavailable (for the database's own failures)."""
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    try:
        with Session(engine) as session, session.begin():
            yield session
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise StoreUnavailable(f"the store {engine.url.render_as_string(hide_password=True)} did not take the "
                               f"write ({type(exc.orig if hasattr(exc, 'orig') else exc).__name__}); nothing was "
                               "kept") from None


class Store:
    """The writes the server makes; each commits before it returns."""

    def __init__(self, url: str, raw: bool = False):
        self.url = url
        self.raw = raw
        self.engine = open_engine(url)

    def record_request(self, **fields) -> None:
        counts: Counter = Counter()
        messages = fields.get("messages")
        if messages:
            fields["messages"] = [{**m, "content": redact(m.get("content"), counts, self.raw)} for m in messages]
        fields["prompt"] = redact(fields.get("prompt"), counts, self.raw)
        fields["reply"] = redact(fields.get("reply"), counts, self.raw)
        with writing(self.engine) as session:
            session.add(RequestRow(redacted=not self.raw, pii=dict(counts) or None, **fields))

    def record_feedback(self, kind: str, request_id: str, other_request_id: str | None = None, **fields) -> int:
        """Insert one feedback row; UnknownRequest when a referenced response id is not stored."""
        counts: Counter = Counter()
        for key in ("correction", "comment"):
            fields[key] = redact(fields.get(key), counts, self.raw)
        with writing(self.engine) as session:
            wanted = {request_id} | ({other_request_id} if other_request_id else set())
            found = set(session.scalars(select(RequestRow.id).where(RequestRow.id.in_(wanted))))
            missing = sorted(wanted - found)
            if missing:
                raise UnknownRequest(missing[0])
            row = FeedbackRow(kind=kind, request_id=request_id, other_request_id=other_request_id,
                              created_at=utcnow(), **fields)
            session.add(row)
            session.flush()
            return row.id

    def record_promotion(self, model: str, action: str, run_dir: str, version: str | None,
                         previous_version: str | None, replica: str | None) -> int:
        with writing(self.engine) as session:
            row = PromotionRow(created_at=utcnow(), model=model, action=action, run_dir=run_dir, version=version,
                               previous_version=previous_version, replica=replica)
            session.add(row)
            session.flush()
            return row.id

    def newest_promotions(self, models: list[str]) -> dict[str, dict]:
        """The newest promotion row (as a dict) of each of these models that has one."""
        from sqlalchemy import func
        from sqlalchemy.exc import InterfaceError, OperationalError

        newest = (select(PromotionRow.model, func.max(PromotionRow.id).label("id"))
                  .where(PromotionRow.model.in_(models)).group_by(PromotionRow.model).subquery())
        try:
            with Session(self.engine) as session:
                rows = session.scalars(select(PromotionRow).join(newest, PromotionRow.id == newest.c.id))
                return {row.model: _as_dict(row) for row in rows}
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(f"the store did not answer ({type(exc).__name__})") from None

    def close(self) -> None:
        self.engine.dispose()


def read_tables(url: str, since: datetime | None = None) -> tuple[list[dict], list[dict]]:
    """All request rows and feedback rows (as dicts), optionally only those created at or after since."""
    engine = open_engine(url)
    try:
        with Session(engine) as session:
            requests = select(RequestRow).order_by(RequestRow.created_at)
            feedback = select(FeedbackRow).order_by(FeedbackRow.created_at)
            if since is not None:
                requests = requests.where(RequestRow.created_at >= since)
                feedback = feedback.where(FeedbackRow.created_at >= since)
            return ([_as_dict(r) for r in session.scalars(requests)], [_as_dict(f) for f in session.scalars(feedback)])
    finally:
        engine.dispose()


def _as_dict(row) -> dict:
    values = {column.name: getattr(row, column.name) for column in row.__table__.columns}
    for key, value in values.items():  # SQLite returns naive datetimes; everything is stored in UTC
        if isinstance(value, datetime) and value.tzinfo is None:
            values[key] = value.replace(tzinfo=timezone.utc)
    return values


def parse_since(text: str | None) -> datetime | None:
    """'24h', '7d', '30m' back from now, or an ISO date/time (UTC when no zone is given)."""
    if not text:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: write a duration back from now (30m, 24h, 7d) or an ISO date "
                          "(2026-01-31 or 2026-01-31T12:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
