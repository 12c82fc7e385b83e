"""The daily purge: incidents older than the policies' retention are deleted.

With several policies the longest retention wins, so that no policy's records go early;
with several replicas each purges, which is harmless (a purge is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.policy import Policy
from gateway.store.base import Store

if TYPE_CHECKING:
    from gateway.app import AppState

__all__ = ["purge_forever", "purge_once"]

log = logging.getLogger("modgate.retention")

DAY_S = 86400.0
FIRST_DELAY_S = 60.0  # not during start-up, when the classifiers warm


async def purge_once(store: Store, policies: Iterable[Policy]) -> int:
    keep_s = max(p.spec.retention.incidents for p in policies)
    deleted = await store.incidents.purge(time.time() - keep_s)
    log.info("retention purge deleted=%d keep_days=%.0f", deleted, keep_s / DAY_S)
    return deleted


async def purge_forever(state: AppState, first_delay_s: float = FIRST_DELAY_S) -> None:
    await asyncio.sleep(first_delay_s)
    while True:
        try:
            await purge_once(state.store, state.all_policies)
        except Exception:  # the store may be down; the next day tries again
            log.exception("retention purge failed")
            state.metrics.store_errors.labels("purge").inc()
        await asyncio.sleep(DAY_S)
