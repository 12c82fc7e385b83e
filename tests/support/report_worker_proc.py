"""``python -m tests.support.report_worker_proc REDIS_URL PREFIX CONFIG``: what ``modgate reports
worker`` runs, over a Redis key prefix of the test's own (the command uses the default prefix)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from gateway.cli_reports import run_worker
from gateway.config import load_config
from gateway.sinks import sinks_from
from gateway.store.redis import RedisStore


def main() -> None:
    url, prefix, config = sys.argv[1:4]
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = load_config(Path(config))
    store = RedisStore(url, prefix=prefix, reports=cfg.reports)
    asyncio.run(run_worker(store, sinks_from(cfg.reports, cfg.base_dir)))


if __name__ == "__main__":
    main()
