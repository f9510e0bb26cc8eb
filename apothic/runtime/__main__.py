"""Entry point of a function container: ``python -m apothic.runtime``.

Started by a provider, the command is the container's supervisor (``_supervisor``): it runs no
user code, and starts the container's runtimes, each this same command with
``APOTHIC_TASK_INDEX`` set. A runtime serves the function's inputs: its Temporal worker on a
thread, user code in the main thread.
"""

from __future__ import annotations

import os

from ._tasks import TASK_INDEX_ENV, wanted_tasks


def main() -> None:
    if TASK_INDEX_ENV not in os.environ:
        from ._supervisor import supervise

        supervise(wanted_tasks())  # never returns
    _die_with_supervisor()
    _serve()


def _die_with_supervisor() -> None:
    """Die with the supervisor (Linux: SIGKILL when it dies), as a container's processes die
    with the container; exit at once if it is gone already."""
    from ._channel import PARENT_ENV

    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(parent):
        os._exit(1)


def _serve() -> None:
    import asyncio
    import faulthandler
    import signal
    import threading
    import traceback
    from datetime import timedelta

    from .._control._config import load_settings
    from ._executor import MainThreadExecutor
    from ._runtime import Runtime, RuntimeConfig

    # A crash in native code (SIGSEGV, SIGABRT, ...) prints the Python stacks to fd 2 first:
    # while an input runs, into its captured output.
    faulthandler.enable(all_threads=True)
    config = RuntimeConfig.from_env()
    _trace_from_env(config)
    executor = MainThreadExecutor()
    runtime = Runtime(config, load_settings(), executor)

    async def serve_then_leave() -> None:
        await runtime.serve()
        if runtime.abandoned:
            # The server is gone: leave now. Past this point asyncio.run would cancel the
            # Temporal worker's tasks and wait for their graceful shutdown, which waits for
            # pollers that retry against the missing server for as long as it stays missing.
            executor.stop()
            _exit(config, executor, runtime.exit_code)

    def serve() -> None:
        try:
            asyncio.run(serve_then_leave())
        except BaseException:  # noqa: BLE001 - report, then make the container exit
            traceback.print_exc()
            runtime.exit_code = runtime.exit_code or 1
        finally:
            executor.stop()
            if runtime.stuck or runtime.abandoned:
                # The main thread is stuck in user code that ignored its interruption, or the
                # server is gone and its inputs cannot be reported anyway.
                _exit(config, executor, runtime.exit_code)

    def on_term(signum: int, frame: object) -> None:
        runtime.request_shutdown(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    thread = threading.Thread(target=serve, name="apothic-runtime", daemon=True)
    thread.start()
    executor.serve_forever()
    thread.join(timeout=timedelta(minutes=5).total_seconds())
    _exit(config, executor, runtime.exit_code)


def _trace_from_env(config: object) -> None:
    """Export this runtime's spans (and those of the user's code) where the ``OTEL_*``
    variables say, when the image has opentelemetry-sdk; a user's module may set up its own
    SDK instead (``apothic/_trace``)."""
    from .._trace import configure_from_env

    configure_from_env("apothic-container", {
        "apothic.container_id": getattr(config, "container_id", ""),
        "apothic.app": getattr(config, "app", ""),
        "apothic.function": getattr(config, "function", ""),
        "apothic.version": str(getattr(config, "version", "")),
        "apothic.task_index": os.environ.get(TASK_INDEX_ENV, "0"),
    })


def _exit(config: object, executor: object, code: int) -> None:
    """Exit with ``code``, first leaving it in the status file (a watcher that adopted this
    process after a control worker restart is not its parent and cannot wait for it), and
    exporting the spans still buffered (``os._exit`` skips the SDK's own exit hook)."""
    import sys

    from .._trace import flush

    flush(3.0)
    executor.remove_files()  # type: ignore[attr-defined]
    status_file = getattr(config, "status_file", "")
    if status_file:
        try:
            with open(status_file, "w") as f:
                f.write(str(code))
        except OSError:
            pass
    # The supervisor prints the container's own last line (``apothic-runtime: exit N``, which
    # hosts that cannot report exit codes read from the log); this one names the task.
    print(f"apothic-runtime task {os.environ.get(TASK_INDEX_ENV, '0')}: exit {code}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
