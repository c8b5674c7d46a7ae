"""One platebench function called in a fresh sandboxed interpreter, for work that must import a plugin.

The evaluator never imports a plugin's module. When it needs something only the plugin's code can say — its
access level, description and resolved config (:func:`benchmark.method_info.describe_named`), or the in-process
conformance checks of ``bench methods check`` — it calls :func:`run_isolated`, which starts
``python -m benchmark.sealed.isolated`` in the same sandbox as a sealed worker (:mod:`benchmark.sealed.sandbox`:
bubblewrap where the machine allows it; then a Landlock allowlist and the audit hook) with a scratch folder as
its only writable place and its home, caches and ``$PLATEBENCH_CACHE``. The function's argument and result
travel as JSON over a :class:`~benchmark.sealed.channel.Channel`; the result is plain data, never executed, and
the caller checks it. Only functions of platebench's own modules (``benchmark.*``) can be named.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BenchError
from .channel import Channel, ChannelError, ChannelTimeout


class IsolatedFailure(BenchError):
    """The isolated call crashed, ran past its time limit or answered something malformed."""


def run_isolated(target: str, payload: dict, *, time_limit_s: float = 600.0, memory_limit_gb: float | None = None,
                 readable: Sequence[str | Path] = ()) -> dict:
    """Call ``target`` (``"benchmark.<module>:<function>"``, taking and returning a JSON dict) on ``payload`` in
    a fresh sandboxed interpreter; its result. ``readable``: extra paths it may read (e.g. a plugin's package).

    Raises :class:`IsolatedFailure` with one line saying what went wrong.
    """
    from .sandbox import bwrap_command, choose, readable_code

    module, _, function = target.partition(":")
    if not module.startswith("benchmark.") or not function:
        raise BenchError(f"run_isolated calls only platebench functions ('benchmark.<module>:<function>'), "
                         f"not {target!r}")
    kind, _ = choose()
    reads = sorted({*readable_code(), *(os.path.realpath(p) for p in readable)})
    scratch = tempfile.mkdtemp(prefix="platebench-isolated-")
    ours, theirs = Channel.pair()
    report_r, report_w = os.pipe()
    fd = theirs.fileno()
    command = [sys.executable, "-m", "benchmark.sealed.isolated", str(fd), str(report_w)]
    if kind == "bubblewrap":
        command = [*bwrap_command(reads, [scratch]), *command]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    deadline = time.monotonic() + time_limit_s
    try:
        process = subprocess.Popen(command, pass_fds=(fd, report_w), env=env, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        os.close(report_r)
        raise IsolatedFailure(f"could not start an isolated interpreter ({exc})") from exc
    finally:
        theirs.close()
        os.close(report_w)
    ours.name = "the isolated interpreter's reply"
    try:
        ours.send("call", {"target": target, "payload": payload, "readable": [*reads, "/dev", "/proc"],
                           "scratch": scratch, "sandbox": kind,
                           "memory_limit_bytes": int(memory_limit_gb * 2**30) if memory_limit_gb else None},
                  deadline=deadline)
        reply = ours.receive(deadline=deadline, kinds=("result", "error"), max_array_bytes=0)
    except ChannelTimeout:
        raise IsolatedFailure(f"{target} ran past its time limit of {time_limit_s:g} s in an isolated interpreter "
                              "and was stopped") from None
    except ChannelError as exc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        from .audit import read_violation

        line = read_violation(report_r)
        code = process.poll()
        raise IsolatedFailure(f"{target} failed in an isolated interpreter: "
                              f"{f'the sandbox stopped it: {line}' if line else exc}"
                              f"{f' (exit code {code})' if code is not None else ''}") from None
    finally:
        ours.close()
        os.close(report_r)
        with contextlib.suppress(OSError):
            os.killpg(process.pid, 9)
        process.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    if reply.kind == "error":
        message = reply.fields.get("message")
        raise IsolatedFailure(f"{target} raised in an isolated interpreter: "
                              f"{message[:2000] if isinstance(message, str) else 'no message'}")
    result = reply.fields.get("result")
    if not isinstance(result, dict):
        raise IsolatedFailure(f"{target} returned {type(result).__name__}, not a JSON object")
    return result


def _serve(fd: int, report_fd: int) -> None:
    """The isolated interpreter: receive the call, confine this process, call, answer (see module docstring)."""
    from . import audit, landlock
    from .channel import plain_json
    from .sandbox import live_in

    conn = Channel.from_fd(fd)
    message = conn.receive(kinds=("call",), deadline=time.monotonic() + 60, max_array_bytes=0)
    fields = message.fields
    scratch = str(fields["scratch"])
    live_in(scratch)
    readable = [str(p) for p in fields["readable"]]
    sys.path[:] = [p for p in sys.path if p and any(os.path.realpath(p) == r or os.path.realpath(p).startswith(
        r.rstrip(os.sep) + os.sep) for r in readable)]
    devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random"]
    landlock.restrict_to(readable, [scratch], devices)
    from .preload import preload

    preload(warm=False)  # the label-free libraries, imported before the hook as in the zygote (no warm-up)
    audit.install(audit.Policy(protected=(), readable=tuple(os.path.realpath(p) for p in readable),
                               writable=(os.path.realpath(scratch), *devices)), report_fd)
    if fields.get("memory_limit_bytes"):
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (int(fields["memory_limit_bytes"]),
                                                  resource.getrlimit(resource.RLIMIT_DATA)[1]))
    module, _, function = str(fields["target"]).partition(":")
    try:
        func: Any = getattr(importlib.import_module(module), function)
        result = plain_json(func(dict(fields["payload"])), "result")
    except BaseException as exc:  # noqa: BLE001 - reported to the caller as one line
        conn.send("error", {"message": f"{type(exc).__name__}: {exc}"})  # noqa
        return
    conn.send("result", {"result": result})


if __name__ == "__main__":
    try:
        _serve(int(sys.argv[1]), int(sys.argv[2]))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(0)
