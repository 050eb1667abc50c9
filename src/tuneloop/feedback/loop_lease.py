"""The loop's lease in the store: one `tuneloop loop` per name at a time, and its state saved only by the holder.

A loop takes its name's row in the store's `loops` table (tuneloop.serve.store.LoopRow) and renews a heartbeat
from a background thread while it works, so two loops for one served model, on one host or on two, never run a
cycle side by side. Another loop takes the lease over when the holder's heartbeat is older than the lease
(`seconds`; both times come from the database's clock, so hosts whose clocks disagree still agree on it), or at
once when the holder was a process on this host that no longer exists (a kill -9, a reboot).

Every save is fenced: it writes only while this process still owns the row, so a loop that lost its lease (it
stalled past the lease and another took over) fails at its next step with LeaseLost instead of overwriting the
new holder's state or promoting twice.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tuneloop.errors import TuneloopError
from tuneloop.serve.store import LoopRow, open_engine

DEFAULT_LEASE_S = 120.0


class LeaseHeld(TuneloopError):
    """Another live loop holds this name's lease."""


class LeaseLost(TuneloopError):
    """This loop's lease was taken over while it worked: it must stop without saving or promoting."""


def database_now(connection) -> float:
    """Epoch seconds by the database's clock, so loops on hosts whose clocks disagree still agree on a heartbeat's age.

    PostgreSQL's clock_timestamp() and SQLite's julianday('now') (the clock of the host that holds the file);
    another database falls back to this host's clock.
    """
    from sqlalchemy import text

    dialect = connection.dialect.name
    if dialect == "postgresql":
        return float(connection.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())
    if dialect == "sqlite":
        return float(connection.execute(text("SELECT (julianday('now') - 2440587.5) * 86400.0")).scalar_one())
    return time.time()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class LoopLease:
    def __init__(self, url: str, name: str, seconds: float = DEFAULT_LEASE_S, console_print=print):
        self.name = name
        self.seconds = seconds
        self.say = console_print
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.engine = open_engine(url)
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> dict | None:
        """Take the lease (LeaseHeld when a live loop has it); returns the state the last holder saved, if any."""
        with self.engine.begin() as connection:
            now = database_now(connection)
            row = connection.execute(select(LoopRow).where(LoopRow.name == self.name)).first()
            if row is None:
                try:
                    connection.execute(LoopRow.__table__.insert().values(
                        name=self.name, owner=self.owner, host=self.host, pid=os.getpid(), heartbeat=now,
                        state=None, updated_at=datetime.now(timezone.utc)))
                except IntegrityError:  # another loop inserted the row between our select and insert
                    raise LeaseHeld(f"loop {self.name!r}: another loop took the lease just now") from None
                state = None
            else:
                if row.owner is not None and not self._expired(row, now):
                    raise LeaseHeld(f"loop {self.name!r} is held by {row.owner} (heartbeat "
                                    f"{now - (row.heartbeat or now):.0f}s ago, lease {self.seconds:g}s). Two loops "
                                    "never run one cycle at once; stop that loop, or wait for its lease to expire.")
                previous = LoopRow.owner.is_(None) if row.owner is None else LoopRow.owner == row.owner
                # Compare-and-swap on the owner: of two loops taking over at once, one updates a row.
                taken = connection.execute(update(LoopRow).where(LoopRow.name == self.name, previous).values(
                    owner=self.owner, host=self.host, pid=os.getpid(), heartbeat=now)).rowcount
                if taken != 1:
                    raise LeaseHeld(f"loop {self.name!r}: another loop took the lease just now")
                if row.owner is not None:
                    self.say(f"loop: took over {self.name!r} from {row.owner}, whose heartbeat stopped "
                             f"{now - (row.heartbeat or now):.0f}s ago")
                state = row.state
        self._thread = threading.Thread(target=self._beat, name="loop-lease", daemon=True)
        self._thread.start()
        return state

    def _expired(self, row, now: float) -> bool:
        if row.heartbeat is None or now - row.heartbeat > self.seconds:
            return True
        return row.host == self.host and row.pid is not None and not process_alive(row.pid)

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                with self.engine.begin() as connection:
                    renewed = connection.execute(update(LoopRow).where(
                        LoopRow.name == self.name, LoopRow.owner == self.owner).values(
                            heartbeat=database_now(connection))).rowcount
            except SQLAlchemyError as exc:  # the store is down: keep trying; the lease lasts `seconds`
                self.say(f"loop: cannot renew the lease ({type(exc).__name__}); retrying")
                continue
            if renewed != 1:
                self.lost = True
                return

    def save(self, state: dict) -> None:
        """Store the state, only while this process holds the lease (LeaseLost otherwise)."""
        if self.lost:
            raise self._lost()
        with self.engine.begin() as connection:
            saved = connection.execute(update(LoopRow).where(LoopRow.name == self.name, LoopRow.owner == self.owner)
                                       .values(state=state, heartbeat=database_now(connection),
                                               updated_at=datetime.now(timezone.utc))).rowcount
        if saved != 1:
            self.lost = True
            raise self._lost()

    def _lost(self) -> LeaseLost:
        return LeaseLost(f"loop {self.name!r}: another loop took the lease over while this one worked (its "
                         f"heartbeat was older than {self.seconds:g}s); this one stops without saving.")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.engine.begin() as connection:
                connection.execute(update(LoopRow).where(LoopRow.name == self.name, LoopRow.owner == self.owner)
                                   .values(owner=None, pid=None))
        except SQLAlchemyError as exc:  # the lease then expires by itself
            self.say(f"loop: could not release the lease ({type(exc).__name__}); it expires in {self.seconds:g}s")
        self.engine.dispose()


def read_loop_state(url: str, name: str) -> dict | None:
    """The state a loop saved (None when no loop of that name ran), without taking its lease."""
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(select(LoopRow.state).where(LoopRow.name == name)).first()
        return row.state if row else None
    finally:
        engine.dispose()
