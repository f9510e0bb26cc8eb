"""The container's supervisor: what ``python -m apothic.runtime`` runs.

It runs no user code. It starts the container's runtimes (one, or ``tasks_per_container``:
``_tasks``), each its own process running the same command with ``APOTHIC_TASK_INDEX``, and
watches them through the notes of ``_channel``: which inputs each holds, when their user code
runs, and whether its event loop still runs. It is what makes ``timeout_s`` hold for any code
and tells a crash of the function from the loss of its container:

- **Timeout.** An input whose user code still runs ``KILL_GRACE_S`` after its ``timeout_s``
  (the runtime interrupts it at ``timeout_s`` and reports it itself within its own grace), or
  ``SILENT_KILL_S`` after it while the runtime sends nothing (native code that holds the
  interpreter's lock: the runtime cannot even try), gets its runtime killed (the process
  group, SIGKILL). The supervisor then fails the input with ``FunctionTimeoutError`` (a user
  failure, as the runtime's own) through Temporal's asynchronous completion.
- **Silence.** While a runtime sends nothing for ``SILENT_S`` and holds inputs, the supervisor
  heartbeats them in its place (repeating the runtime's last heartbeat, with fresh output),
  so that the server does not take them for lost; a cancel it learns of that way, for a
  runtime that stays silent, kills it and reports the cancel.
- **Crash.** A runtime that exits or is killed by a signal while the user code of an input
  runs (``os._exit``, SIGSEGV, SIGKILL, the kernel's out-of-memory killer) fails that input
  with ``apothic.ProcessDied``: a user failure, retried by the function's ``retries``, whose
  message names the exit code or signal and whose ``logs`` are the input's captured output.
  A SIGKILL while the container's memory cgroup counted another out-of-memory kill
  (``oom_kill`` of its ``memory.events`` or v1 ``memory.oom_control``: the container's own
  group, where Docker and the process provider show it, or ``APOTHIC_MEMORY_CGROUP``) says
  "ran out of memory (memory_mb=N)", with details ``oom`` and ``memory_mb``.
  Its other inputs (waiting, or whose code had finished) fail as ``apothic.NotRun``, an
  infrastructure failure that does not count against ``retries``. A map's batch is completed
  with the results its last heartbeat carried, the crashed input's failure and ``NotRun`` for
  the rest.
- **Replacement.** A runtime that died running an input (or killed for one), or that retired
  itself (``EXIT_REPLACE``), is started again in its place; the container keeps its slots.
  A runtime that fails otherwise (bad code, a mount, a crash between inputs) fails the
  container as before: the others drain and the container exits with that code (a signal:
  128 + its number). A runtime that ended (idle, drained) is not replaced; the container
  ends with its last runtime.
- **What it cannot see**: the supervisor itself killed (or the whole container, or its host):
  nobody reports, the server's heartbeat timeout finds the inputs lost, an infrastructure
  retry. Each runtime dies with its supervisor (``PR_SET_PDEATHSIG``: SIGKILL).

Temporary files: the supervisor makes a folder ``apothic-container-*`` in the system's
temporary folder, with a scratch folder per runtime (``APOTHIC_SCRATCH_DIR``: capture files,
heartbeat mirrors). A runtime's folder is removed when it exits, however it exits, after the
supervisor has read what it needs; the container's folder when the supervisor exits. A
supervisor killed with SIGKILL leaves its folder: each supervisor first removes the folders of
supervisors no longer running (``_sweep``).

Cost: the supervisor imports the standard library only (no Temporal, no asyncio) before it
starts the runtimes; once a runtime serves (its first note, past the cold start) it loads
Temporal's SDK and connects, in a thread (``_reports``), so that a report can reach the server
before its heartbeat timeout (5 s) of an input's start.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, NoReturn

from ._channel import (
    FD_ENV,
    HEARTBEAT_LOG_BYTES,
    PARENT_ENV,
    SCRATCH_ENV,
    parse,
    read_log,
)
from ._tasks import gpu_devices, split_gpus, task_env

if TYPE_CHECKING:
    from ._reports import ActivityReports

# The runtime sends a note at least every half second while its loop runs; after this long
# without one it heartbeats no more either, and the supervisor heartbeats its inputs instead.
SILENT_S = 1.5
BEAT_EVERY_S = 1.0
# An input's user code still running this long after its timeout_s gets its runtime killed. The
# runtime reports a timeout itself by timeout_s + INTERRUPT_GRACE_S (5 s) plus a heartbeat.
KILL_GRACE_S = 8.0
# ... or this long after it when the runtime has been silent for as long (it cannot interrupt).
SILENT_KILL_S = 2.0
# A cancel the supervisor heard of (by its heartbeat) for a runtime that stays silent this long.
CANCEL_KILL_S = 3.0
# A pipe closed by a runtime that still runs (its user code closed the descriptor): after this
# long the supervisor stops watching its inputs (the runtime reports them itself).
EOF_GRACE_S = 1.0
# How long the supervisor waits for its last reports before it exits.
REPORT_WAIT_S = 30.0
DIR_PREFIX = "apothic-container-"
# A container folder without its owner file this old is a leftover.
STALE_DIR_S = 600.0
EXIT_OK, EXIT_REPLACE = 0, 3  # as apothic._contracts (not imported here: the supervisor starts lean)
PROCESS_DIED = "apothic.ProcessDied"
NOT_RUN = "apothic.NotRun"


def _say(text: str) -> None:
    print(f"apothic container supervisor: {text}", file=sys.stderr, flush=True)


class _Input:
    """An activity a runtime holds: one input (``execute``) or a map's batch (``batch``)."""

    def __init__(self, note: dict[str, Any]) -> None:
        self.id = note["id"]
        self.token = note.get("token") or ""
        self.timeout_s = float(note.get("timeout_s") or 0)
        self.kind = note.get("kind") or "execute"
        self.items: list[int] | None = note.get("items")
        self.hb = note.get("hb") or ""
        self.running: dict[int | None, tuple[float, str]] = {}  # index (None: an execute) -> (start, log)
        self.last_log = ""
        self.last_beat = 0.0
        self.beating: Any = None  # the heartbeat in flight (a future)
        self.cancel_seen = 0.0


class _Child:
    """One runtime process."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], rfd: int, scratch: str) -> None:
        self.index = index
        self.proc = proc
        self.rfd = rfd
        self.scratch = scratch
        self.buf = b""
        self.inputs: dict[int, _Input] = {}
        self.heard = time.monotonic()
        self.eof_at = 0.0
        self.blind = False
        self.leaving = ""
        # Why the supervisor killed it: ("timeout" | "cancelled", input id, item index) or None.
        self.cause: tuple[str, int, int | None] | None = None
        # The container's out-of-memory kills when it started (None: not counted here), and
        # whether it was one of them.
        self.oom_at: int | None = None
        self.oom = False


class Supervisor:
    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.argv = [sys.executable, *(getattr(sys, "orig_argv", None) or ["python", "-m", "apothic.runtime"])[1:]]
        self.env = dict(os.environ)
        devices = gpu_devices(self.env)
        self.shares = split_gpus(devices, tasks)
        if devices:
            unused = len(devices) - sum(len(s.split(",")) for s in set(self.shares) if s)
            _say(f"{tasks} tasks on GPUs {','.join(devices)}: "
                 + ", ".join(f"task {i} -> {g}" for i, g in enumerate(self.shares))
                 + (f" ({unused} unused)" if unused > 0 else ""))
        self.children: list[_Child] = []
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.code = EXIT_OK
        self.starts = 0
        self._reporter: ActivityReports | None = None
        self.memory = memory_folder(self.env)
        self.dir = _make_dir()

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> NoReturn:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        try:
            for index in range(self.tasks):
                if not self.stopping:
                    self._start(index)
            while self.children:
                busy = any(c.inputs for c in self.children)
                for key, _ in self.sel.select(0.25 if busy else 2.0):
                    self._read(key.data)
                now = time.monotonic()
                for child in list(self.children):
                    rc = child.proc.poll()
                    if rc is not None:
                        self._ended(child, rc)
                    else:
                        self._check(child, now)
            if self._reporter is not None:
                self._reporter.wait(REPORT_WAIT_S)
        except Exception:  # noqa: BLE001 - a bug here must not leave runtimes unwatched
            import traceback

            traceback.print_exc()
            for child in self.children:
                self._kill(child, None, "")
            self.code = self.code or 1
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        _exit(self.code)

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True
        for child in self.children:
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    @property
    def reporter(self) -> ActivityReports:
        if self._reporter is None:
            from ._reports import ActivityReports

            self._reporter = ActivityReports(self.env.get("APOTHIC_CONTAINER_ID", ""))
        return self._reporter

    # --- runtimes ------------------------------------------------------------------------------

    def _start(self, index: int) -> None:
        self.starts += 1
        scratch = os.path.join(self.dir, f"task{index}-{self.starts}")
        os.mkdir(scratch)
        rfd, wfd = os.pipe()
        env = task_env(self.env, index, self.shares[index])
        env.update({FD_ENV: str(wfd), SCRATCH_ENV: scratch, PARENT_ENV: str(os.getpid())})
        try:
            proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, pass_fds=(wfd,), process_group=0)
        finally:
            os.close(wfd)
        os.set_blocking(rfd, False)
        child = _Child(index, proc, rfd, scratch)
        child.oom_at = oom_kills(self.memory)
        self.children.append(child)
        self.sel.register(rfd, selectors.EVENT_READ, child)

    def _read(self, child: _Child) -> None:
        while child.rfd >= 0 and not child.eof_at:
            try:
                data = os.read(child.rfd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                child.eof_at = time.monotonic()
                self.sel.unregister(child.rfd)
                return
            child.heard = time.monotonic()
            *lines, child.buf = (child.buf + data).split(b"\n")
            for line in lines:
                note = parse(line)
                if note is not None and not child.blind:
                    self._note(child, note)

    def _note(self, child: _Child, note: dict[str, Any]) -> None:
        op = note["op"]
        if self._reporter is None:
            # The runtime serves (its first note): from now on a report may be due within the
            # server's heartbeat timeout of an input's start. Connect now, past the cold start.
            self.reporter.warm()
        if op == "start" and isinstance(note.get("id"), int):
            child.inputs[note["id"]] = _Input(note)
            return
        if op == "leaving":
            child.leaving = str(note.get("reason") or "")
            return
        inp = child.inputs.get(note.get("id"))  # type: ignore[arg-type]
        if inp is None:
            return
        if op == "run":
            log = str(note.get("log") or "")
            inp.running[note.get("index")] = (float(note.get("at") or time.monotonic()), log)
            inp.last_log = log
        elif op == "done":
            inp.running.pop(note.get("index"), None)
        elif op == "end":
            child.inputs.pop(inp.id, None)

    def _check(self, child: _Child, now: float) -> None:
        if child.eof_at and not child.blind and now - child.eof_at >= EOF_GRACE_S:
            _say(f"task {child.index} closed its channel while running; its inputs are no longer watched")
            child.blind = True
            child.inputs.clear()
        if child.cause is not None or child.leaving or not child.inputs:
            return
        silent = now - child.heard
        for inp in list(child.inputs.values()):
            for index, (started, _) in list(inp.running.items()) if inp.timeout_s > 0 else ():
                over = now - (started + inp.timeout_s)
                if over >= KILL_GRACE_S or (over >= SILENT_KILL_S and silent >= SILENT_KILL_S):
                    self._kill(child, ("timeout", inp.id, index),
                               f"an input ran {over:.0f} s past its timeout_s={inp.timeout_s:g}"
                               + (" without the runtime answering" if silent >= SILENT_KILL_S else ""))
                    return
            if inp.cancel_seen and silent >= CANCEL_KILL_S and now - inp.cancel_seen >= CANCEL_KILL_S:
                self._kill(child, ("cancelled", inp.id, None), "an input was cancelled while the runtime did not answer")
                return
            if silent >= SILENT_S and now - inp.last_beat >= BEAT_EVERY_S and inp.token:
                if inp.beating is None or inp.beating.done():
                    inp.last_beat = now
                    inp.beating = self.reporter.heartbeat(inp)
        lost = self.reporter.unreachable_for() if self._reporter is not None else 0.0
        if lost and self._reporter is not None and lost >= self._reporter.grace_s:
            _say(f"the Temporal server has not answered for {lost:.0f} s (worker.server_unreachable_s = "
                 f"{self._reporter.grace_s:g}) while task {child.index} did not answer either; stopping the container")
            self.stopping = True
            self.code = EXIT_OK
            child.leaving = "server unreachable"
            self._kill(child, None, "")

    def _kill(self, child: _Child, cause: tuple[str, int, int | None] | None, why: str) -> None:
        child.cause = cause
        if why:
            _say(f"killing task {child.index} (pid {child.proc.pid}): {why}")
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            child.proc.kill()

    def _ended(self, child: _Child, rc: int) -> None:
        if not child.eof_at:
            self._read(child)  # the notes it sent last
        self.children.remove(child)
        if not child.eof_at:
            self.sel.unregister(child.rfd)
        os.close(child.rfd)
        child.rfd = -1
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)  # what its user code left running
        except (ProcessLookupError, PermissionError):
            pass
        died_running = child.cause is not None or any(inp.running for inp in child.inputs.values())
        if rc == -signal.SIGKILL and child.cause is None and child.oom_at is not None:
            child.oom = (oom_kills(self.memory) or 0) > child.oom_at
        if child.inputs and not child.leaving:
            self._report(child, rc)
        shutil.rmtree(child.scratch, ignore_errors=True)
        status = self.env.get("APOTHIC_STATUS_FILE", "")
        if status:
            try:
                os.unlink(f"{status}.task{child.index}")
            except OSError:
                pass
        how = self._how(child, rc)
        if child.leaving:
            _say(f"task {child.index} {how}: {child.leaving}")
            return
        if died_running and not self.stopping:
            _say(f"task {child.index} {how} while running an input; starting it again")
            self._start(child.index)
        elif rc == EXIT_REPLACE and not self.stopping:
            _say(f"task {child.index} retired itself (an input ignored its interruption); starting it again")
            self._start(child.index)
        elif rc in (EXIT_OK, EXIT_REPLACE) or died_running:
            if self.tasks > 1:
                _say(f"task {child.index} ended ({len(self.children)} running)")
        else:
            _say(f"task {child.index} {how}; stopping the container")
            if self.code == EXIT_OK:
                self.code = rc if rc > 0 else 128 - rc
            self.stopping = True
            self._on_term(signal.SIGTERM, None)

    # --- reports -------------------------------------------------------------------------------

    def _how(self, child: _Child, rc: int) -> str:
        """How ``child`` ended: :func:`how_it_ended`, or out of memory (see the module doc)."""
        if not child.oom:
            return how_it_ended(rc)
        mb = memory_limit_mb(self.memory)
        limit = f"memory_mb={mb}" if mb else "the memory of the machine"
        return (f"ran out of memory ({limit}; the kernel's out-of-memory killer sent it SIGKILL when the "
                "container's processes together reached it)")

    def _died(self, child: _Child, how: str, logs: str, beside: int, rc: int) -> tuple[str, dict[str, Any]]:
        """The message and details of ``apothic.ProcessDied`` for an input ``child`` ran."""
        message, detail = died_message(how, logs, beside), _died_detail(logs, rc, beside)
        if child.oom:
            message += ("\nFix: give the function more memory (@app.function(memory_mb=...)), or make it use "
                        "less at once")
            detail.update(oom=True, memory_mb=memory_limit_mb(self.memory))
        return message, detail

    def _report(self, child: _Child, rc: int) -> None:
        """Settle the inputs ``child`` held when it ended (see the module doc)."""
        how = self._how(child, rc)
        # The capture files of the user code that ran: inputs with another file ran beside (the
        # inputs of one batched call share theirs).
        logs_running = [log for inp in child.inputs.values() for _, log in inp.running.values()]
        for inp in child.inputs.values():
            if not inp.token:
                continue
            cause = child.cause if child.cause is not None and child.cause[1] == inp.id else None
            if inp.kind == "batch":
                self._report_batch(child, inp, cause, how, logs_running)
            elif cause is not None and cause[0] == "cancelled":
                self.reporter.cancelled(inp)
            elif cause is not None:
                logs = read_log(inp.last_log)
                self.reporter.fail(inp, timeout_message(inp.timeout_s), "FunctionTimeoutError", {"logs": logs})
            elif child.cause is None and inp.running:
                logs = read_log(inp.last_log)
                beside = sum(log != inp.last_log for log in logs_running)
                message, detail = self._died(child, how, logs, beside, rc)
                self.reporter.fail(inp, message, PROCESS_DIED, detail)
            else:
                self.reporter.fail(inp, not_run_message(how, child.cause), NOT_RUN,
                                   {"logs": read_log(inp.last_log, HEARTBEAT_LOG_BYTES)})

    def _report_batch(self, child: _Child, inp: _Input, cause: tuple[str, int, int | None] | None, how: str,
                      logs_running: list[str]) -> None:
        if cause is not None and cause[0] == "cancelled":
            self.reporter.cancelled(inp)
            return
        if inp.items is None or (None in inp.running and child.cause is None):
            # Which inputs it held, or which one ran, is not known: the whole batch runs again.
            self.reporter.fail(inp, not_run_message(how, child.cause), NOT_RUN, {})
            return
        failed: dict[int, dict[str, Any]] = {}
        for index, (_, log) in inp.running.items():
            if index is None:
                continue
            logs = read_log(log)
            if cause is not None and cause[2] == index:
                failed[index] = {"error_message": timeout_message(inp.timeout_s), "error_type": "FunctionTimeoutError",
                                 "error_detail": {"logs": logs}}
            elif child.cause is None:
                beside = sum(other != log for other in logs_running)
                message, detail = self._died(child, how, logs, beside, child.proc.returncode)
                failed[index] = {"error_message": message, "error_type": PROCESS_DIED, "error_detail": detail}
        self.reporter.complete_batch(inp, failed, not_run_message(how, child.cause))


def how_it_ended(rc: int) -> str:
    """``exited with code 1``, ``was killed by signal 11 (SIGSEGV: Segmentation fault)``."""
    if rc >= 0:
        return f"exited with code {rc}"
    number = -rc
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    text = f"was killed by signal {number} ({name}"
    description = signal.strsignal(number) or ""
    text += f": {description})" if description else ")"
    if number == signal.SIGKILL:
        text += " (sent by kill -9, or by the kernel when the machine runs out of memory)"
    return text


def memory_folder(env: dict[str, str]) -> str:
    """The folder of the container's memory cgroup, as the container sees it: where a container
    sees its own, unless ``APOTHIC_MEMORY_CGROUP`` names it ("": none, a process container
    without a cgroup, whose ``/sys/fs/cgroup`` is the host's)."""
    if "APOTHIC_MEMORY_CGROUP" in env:
        return env["APOTHIC_MEMORY_CGROUP"]
    return "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/memory.events") else "/sys/fs/cgroup/memory"


def oom_kills(folder: str) -> int | None:
    """How many processes the out-of-memory killer killed in cgroup ``folder`` (None: unknown)."""
    if not folder:
        return None
    for name in ("memory.events", "memory.oom_control"):
        try:
            with open(os.path.join(folder, name)) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def memory_limit_mb(folder: str) -> int | None:
    """The memory limit of cgroup ``folder`` in MiB (None: none, or unknown)."""
    if not folder:
        return None
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            with open(os.path.join(folder, name)) as f:
                value = f.read().strip()
        except OSError:
            continue
        return int(value) >> 20 if value.isdigit() and int(value) < 1 << 60 else None
    return None


def _tail(text: str, lines: int = 20, chars: int = 3000) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(kept)[-chars:]


FAULT_HEADER = "Fatal Python error: "


def _crash_stack(dump: str, lines: int = 12) -> str:
    """The crashing thread's stack from faulthandler's dump (its ``Current thread`` block)."""
    block = dump.split("\nCurrent thread ", 1)
    if len(block) < 2:
        return ""
    stack = ("Current thread " + block[1]).split("\n\n", 1)[0].splitlines()
    return "\n".join(stack[:lines])


def _died_detail(logs: str, rc: int, beside: int) -> dict[str, Any]:
    """The details of ``apothic.ProcessDied``: those of a user error (no exception to unpickle),
    the exit status (``exit``: the code, or minus the signal) and the inputs that ran beside."""
    return {"exc": None, "type": PROCESS_DIED, "traceback": "", "logs": logs, "exit": rc, "beside": beside}


def died_message(how: str, logs: str, others: int) -> str:
    """The message of ``apothic.ProcessDied``: what happened, the input's last output and, for a
    fatal signal, where (faulthandler prints the Python stacks into the output first)."""
    beside = f" ({others} other input(s) ran in the process at the time)" if others > 0 else ""
    output, fault, dump = logs.partition(FAULT_HEADER)
    last = _tail(output)
    shown = f" Its last output:\n{last}" if last.strip() else " It printed nothing."
    if fault:
        where = _crash_stack(dump)
        shown += f"\n{FAULT_HEADER}{dump.splitlines()[0] if dump else ''}" + (f"\n{where}" if where else "")
    return f"the function's process {how} while it ran this input{beside}.{shown}"


def timeout_message(timeout_s: float) -> str:
    return (f"the function ran longer than its timeout_s={timeout_s:g} and did not return to Python to be "
            "interrupted (native code that holds the interpreter's lock?); its process was killed and replaced")


def not_run_message(how: str, cause: tuple[str, int, int | None] | None) -> str:
    if cause is not None:
        why = "was killed: another of its inputs overran its timeout" if cause[0] == "timeout" else "was killed"
        return f"the function's process {why}; this input runs again elsewhere"
    return f"the function's process {how} before this input ran (or after its code returned); it runs again"


# --- the container's temporary folder ---------------------------------------------------------


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _make_dir() -> str:
    """This container's temporary folder (with the owner file ``_sweep`` reads)."""
    _sweep()
    folder = tempfile.mkdtemp(prefix=DIR_PREFIX)
    with open(os.path.join(folder, "owner"), "w") as f:
        f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return folder


def _sweep() -> None:
    """Remove the folders of supervisors that no longer run (killed with SIGKILL)."""
    root = tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            with open(os.path.join(entry.path, "owner")) as f:
                pid_text, _, started = f.read().strip().partition(" ")
            alive = pid_text.isdigit() and bool(started) and _start_time(int(pid_text)) == started
        except OSError:
            try:
                alive = time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_DIR_S
            except OSError:
                continue
        if not alive:
            shutil.rmtree(entry.path, ignore_errors=True)


def _exit(code: int) -> NoReturn:
    status = os.environ.get("APOTHIC_STATUS_FILE", "")
    if status:
        try:
            with open(status, "w") as f:
                f.write(str(code))
        except OSError:
            pass
    # The last line of the container's output: hosts whose API only says "exited" (a rented
    # machine) read the exit code from the log.
    print(f"apothic-runtime: exit {code}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def supervise(tasks: int) -> NoReturn:
    """Run the container: ``tasks`` runtimes, watched and replaced, until the last has ended."""
    Supervisor(max(1, tasks)).run()
