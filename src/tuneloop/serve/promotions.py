"""Replicas follow the store's promotions, so every `tuneloop serve` on one store answers from the same weights.

A promote or rollback that any replica's admin route takes is recorded in the store's promotions table
(tuneloop.serve.store.PromotionRow) once its weights are loaded there. Every replica reads the newest row of
each model it serves at start (a replica restarted after a promotion comes back on the promoted weights, not on
its command line's run) and then every `interval` seconds, and loads that row's run when it is not what it serves
now; requests already answering finish on the old weights, as with a local promotion. A replica that cannot see
the promoted run directory keeps its weights and logs why, once per row. The store is down: it tries again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tuneloop.errors import TuneloopError
from tuneloop.serve.store import StoreUnavailable

log = logging.getLogger("tuneloop.serve")
DEFAULT_INTERVAL_S = 5.0


def same_run(first: Path | str | None, second: Path | str | None) -> bool:
    return first is not None and second is not None and Path(first).resolve() == Path(second).resolve()


async def apply_newest(state) -> list[str]:
    """Load the newest promoted run of each served model that does not serve it yet; the models changed."""
    served = state.engine.models()
    newest = await asyncio.to_thread(state.store.newest_promotions, sorted(served))
    changed = []
    for model, row in newest.items():
        if row["id"] <= state.promotions_seen.get(model, 0):
            continue
        async with state.promotion_lock:
            current = state.engine.models().get(model)
            state.promotions_seen[model] = row["id"]
            if current is None or same_run(current.run_dir, row["run_dir"]):
                continue
            try:
                loaded = await state.engine.load(model, Path(row["run_dir"]))
            except TuneloopError as exc:
                log.error("promotion %s of %s (by %s) not followed: %s; this replica keeps weights %s", row["id"],
                          model, row["replica"], exc, current.version)
                continue
            state.history.setdefault(model, []).append(current)
            log.info("followed %s %s by %s: %s now answers from %s (weights %s, were %s)", row["action"], row["id"],
                     row["replica"], model, row["run_dir"], loaded.version, current.version)
            changed.append(model)
    return changed


async def follow_promotions(state, interval: float = DEFAULT_INTERVAL_S) -> None:
    """Check the store's promotions every interval seconds until cancelled."""
    while True:
        try:
            await apply_newest(state)
        except StoreUnavailable as exc:
            log.warning("cannot read promotions: %s; trying again in %g s", exc, interval)
        await asyncio.sleep(interval)
