"""``python -m apothic.worker``: run one control worker with the settings in force."""

import asyncio
import logging

from apothic._control._config import load_settings
from apothic._control._embedded import register_pid

from ._worker import run_worker


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    print(
        f"control worker for {settings.address} (namespace {settings.namespace}), "
        f"task queue {settings.worker.control_task_queue}",
        flush=True,
    )
    if settings.embedded:
        register_pid("worker")
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
