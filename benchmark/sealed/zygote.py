"""The zygote: the process every sealed worker is forked from, inside the sandbox.

The evaluator starts it once (:class:`benchmark.sealed.zygote_client.Zygote`), under ``bwrap`` where the machine
allows it (:mod:`benchmark.sealed.sandbox`), as ``python -m benchmark.sealed.zygote FD``. It imports only
label-free code (:mod:`benchmark.sealed.preload`: numpy, torch, timm, the harness, the built-in methods, never a
plugin) and then serves requests on its control channel (:mod:`benchmark.sealed.channel`, JSON and raw bytes,
never pickle), one run at a time:

- ``spawn`` {run, spec} with two descriptors (the run's channel, the audit hook's report pipe): make the run's
  scratch folder, fork a worker (:func:`benchmark.sealed.worker.child_main`), answer ``spawned`` {run, pid};
- when the worker ends, kill everything it started (the zygote is a child subreaper, so orphans come back to
  it), remove its scratch folder and every System V IPC object left in the sandbox's namespace, answer
  ``exited`` {run, code, peak_rss_mb} (``code``: exit status, or minus the signal that ended it);
- ``kill`` {run}: kill the run's worker and everything it started (the time limit, a malformed reply);
- ``quit`` or the channel closing: kill everything, exit.

The zygote is not dumpable and its workers run under a Landlock domain of their own, so a worker can neither
read or write the zygote's memory nor signal it (:mod:`benchmark.sealed.landlock`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 1, 4, 36


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        parents[int(entry)] = int(fields[1])
    out, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        out += children
        frontier += children
    return out


def kill_all_below(root: int, rounds: int = 50) -> dict[int, tuple[int, float]]:
    """SIGKILL every descendant of ``root`` and reap them, until none is left (a forking process included);
    returns the (exit code, peak RSS in MB) of each child reaped on the way."""
    reaped: dict[int, tuple[int, float]] = {}
    for _ in range(rounds):
        pids = descendants(root)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.005)
            else:
                reaped[pid] = (os.waitstatus_to_exitcode(status), round(usage.ru_maxrss / 1024, 1))
    return reaped


def remove_ipc_objects() -> None:
    """Remove every System V shared-memory segment, message queue and semaphore set of this IPC namespace
    (call only inside the sandbox's own namespace: outside it, they would be other programs')."""
    libc = ctypes.CDLL(None, use_errno=True)
    for table, remove in (("shm", libc.shmctl), ("msg", libc.msgctl), ("sem", libc.semctl)):
        try:
            with open(f"/proc/sysvipc/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if len(parts) > 1:
                ident = int(parts[1])
                if table == "sem":
                    remove(ident, 0, 0)  # IPC_RMID = 0
                else:
                    remove(ident, 0, None)


def _clear_folder(path: str) -> None:
    """Remove ``path``'s contents, whatever modes a worker left on them."""
    def fix(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target) or target, 0o700)
            os.chmod(target, 0o700)
            func(target)

    shutil.rmtree(path, onerror=fix)


class Zygote:
    """The zygote's state: its control channel, the running worker, the scratch folders."""

    def __init__(self, control: Any, private_namespaces: bool):
        self.control = control
        self.private = private_namespaces  # inside bwrap: /dev/shm and System V IPC are the sandbox's own
        self.scratch_root = tempfile.mkdtemp(prefix="platebench-runs-")
        self.run: str | None = None
        self.pid: int | None = None
        self.scratch: str | None = None
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.control.fileno(), self.wake_r], [], [], 1.0)
            if self.wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self.wake_r, 4096)
            self._reap()
            if self.control.fileno() in ready:
                from .channel import ChannelError

                try:
                    message = self.control.receive(kinds=("spawn", "kill", "quit"), max_fds=2,
                                                   max_array_bytes=0, deadline=time.monotonic() + 30)
                except ChannelError:
                    self._finish_run(kill=True)
                    return  # the evaluator is gone (or spoke nonsense): nothing more to do
                if message.kind == "quit":
                    self._finish_run(kill=True)
                    return
                if message.kind == "kill":
                    self._kill_run()
                else:
                    self._spawn(message)

    def _spawn(self, message: Any) -> None:
        run = str(message.fields.get("run"))
        if self.pid is not None or len(message.fds) != 2:
            for fd in message.fds:
                os.close(fd)
            self.control.send("refused", {"run": run, "why": "a run is still active" if self.pid is not None
                                          else "a spawn request needs two descriptors"})
            return
        channel_fd, report_fd = message.fds
        scratch = tempfile.mkdtemp(prefix="run-", dir=self.scratch_root)
        spec = dict(message.fields.get("spec") or {})
        spec["scratch"] = scratch
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(self.control.fileno())
                os.close(self.wake_r)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                from .worker import child_main

                child_main(channel_fd, report_fd, spec)
            finally:
                os._exit(70)
        os.close(channel_fd)
        os.close(report_fd)
        self.run, self.pid, self.scratch = run, pid, scratch
        self.control.send("spawned", {"run": run, "pid": pid})

    def _kill_run(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self._reaped(kill_all_below(os.getpid()))
        self._reap()

    def _reaped(self, reaped: dict[int, tuple[int, float]]) -> None:
        if self.pid is not None and self.pid in reaped:
            code, peak = reaped[self.pid]
            self._finish_run(kill=True, code=code, peak_mb=peak)

    def _reap(self) -> None:
        """Reap the worker if it ended: then end what it started, clean up, report."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                self._finish_run(kill=True, code=code, peak_mb=round(usage.ru_maxrss / 1024, 1))

    def _finish_run(self, kill: bool, code: int | None = None, peak_mb: float | None = None) -> None:
        if kill:
            kill_all_below(os.getpid())  # the worker is reaped already: these are what it left behind
        if self.scratch is not None:
            _clear_folder(self.scratch)
        if self.private:
            remove_ipc_objects()
            with contextlib.suppress(OSError):
                for entry in os.listdir("/dev/shm"):
                    path = os.path.join("/dev/shm", entry)
                    if os.path.isdir(path) and not os.path.islink(path):
                        _clear_folder(path)
                    else:
                        os.remove(path)
        if self.run is not None and code is not None:
            with contextlib.suppress(OSError):
                self.control.send("exited", {"run": self.run, "code": code, "peak_rss_mb": peak_mb})
        self.run = self.pid = self.scratch = None


def main(argv: list[str]) -> None:
    """``python -m benchmark.sealed.zygote CONTROL_FD SANDBOX``: preload, then serve (see module docstring)."""
    control_fd, kind = int(argv[0]), argv[1]
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))  # die with the evaluator (bwrap also dies with it)
    _prctl(_PR_SET_DUMPABLE, 0)  # no worker may read or write this process's memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of a worker come back here, to be killed with its run
    from .channel import Channel

    control = Channel.from_fd(control_fd)
    started = time.perf_counter()
    from .preload import preload

    preload()  # the label-free libraries, the built-in methods, torch warmed up

    from .channel import ChannelError

    try:
        control.send("ready", {"pid": os.getpid(), "sandbox": kind,
                               "preload_s": round(time.perf_counter() - started, 3)})
    except (OSError, ChannelError):
        return  # the evaluator stopped while this process was importing
    Zygote(control, private_namespaces=kind == "bubblewrap").serve()
    # serve() returns with its workers reaped and nothing left to write; the interpreter's own shutdown (torch's
    # and the other preloaded libraries' finalisers) would take ~2 s more, which every stop would wait for
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
