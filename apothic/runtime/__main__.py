"""Entry point of a function container: ``python -m apothic.runtime``."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading
import traceback
from datetime import timedelta

from .._config import load_settings
from ._runtime import Runtime, RuntimeConfig
from ._executor import MainThreadExecutor


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when the process that started it dies."""
    parent = int(os.environ.get("APOTHIC_PARENT_PID", "0") or 0)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main() -> None:
    _die_with_parent()
    config = RuntimeConfig.from_env()
    executor = MainThreadExecutor()
    runtime = Runtime(config, load_settings(), executor)

    def serve() -> None:
        try:
            asyncio.run(runtime.serve())
        except BaseException:  # noqa: BLE001 - report, then make the container exit
            traceback.print_exc()
            runtime.exit_code = runtime.exit_code or 1
        finally:
            executor.stop()
            if runtime.stuck:
                # The main thread is stuck in user code that ignored its interruption.
                _exit(config, runtime.exit_code)

    def on_term(signum: int, frame: object) -> None:
        runtime.request_shutdown(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    thread = threading.Thread(target=serve, name="apothic-runtime", daemon=True)
    thread.start()
    executor.serve_forever()
    thread.join(timeout=timedelta(minutes=5).total_seconds())
    _exit(config, runtime.exit_code)


def _exit(config: RuntimeConfig, code: int) -> None:
    """Exit with ``code``, first leaving it in the status file (a watcher that adopted this
    process after a control worker restart is not its parent and cannot wait for it)."""
    if config.status_file:
        try:
            with open(config.status_file, "w") as f:
                f.write(str(code))
        except OSError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
