"""The evaluator's handle on a zygote (:mod:`benchmark.sealed.zygote`): start it in its sandbox, spawn and kill
workers, hear when they end.

:class:`ZygoteProcess` starts ``python -m benchmark.sealed.zygote`` — under ``bwrap`` with the folders it may
read bound read-only (:func:`benchmark.sealed.sandbox.bwrap_command`), or as a plain child process — and speaks
to it over a :class:`~benchmark.sealed.channel.Channel`. Nothing it answers is executed: replies are checked
JSON. If the zygote stops answering, it is killed with its whole sandbox and the next run starts a new one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..errors import BenchError
from .channel import Channel, ChannelError, Message
from .sandbox import bwrap_command

READY_TIMEOUT_S = 600.0
"""How long the zygote may take to import torch and friends (a loaded 2-core machine takes ~15 s)."""
REPLY_TIMEOUT_S = 60.0


class ZygoteFailure(BenchError):
    """The zygote did not start or stopped answering."""


class ZygoteProcess:
    """One zygote in its sandbox (see module docstring); ``readable``: what its workers may read."""

    def __init__(self, kind: str, readable: Sequence[str], network: bool = False):
        self.kind, self.readable, self.network = kind, tuple(readable), network
        self.control: Channel | None = None
        self.process: subprocess.Popen | None = None
        self.ready_fields: dict[str, Any] | None = None
        self.pending: list[Message] = []
        self.started = 0.0

    def start(self) -> None:
        """Start the zygote (it imports while the caller goes on; :meth:`wait_ready` waits for it)."""
        ours, theirs = Channel.pair()
        fd = theirs.fileno()
        command = [sys.executable, "-m", "benchmark.sealed.zygote", str(fd), self.kind]
        if self.kind == "bubblewrap":
            command = [*bwrap_command(self.readable, network=self.network), *command]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self.started = time.perf_counter()
        try:
            self.process = subprocess.Popen(command, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL,
                                            close_fds=True, start_new_session=False)
        except OSError as exc:
            raise ZygoteFailure(f"could not start the sealed workers' zygote ({exc})") from exc
        finally:
            theirs.close()
        self.control = ours

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def fileno(self) -> int:
        assert self.control is not None
        return self.control.fileno()

    def wait_ready(self) -> dict[str, Any]:
        """Block until the zygote has imported its libraries; its ``ready`` fields."""
        if self.ready_fields is None:
            message = self._receive(time.monotonic() + READY_TIMEOUT_S, ("ready",))
            self.ready_fields = dict(message.fields)
            self.ready_fields["start_s"] = round(time.perf_counter() - self.started, 3)
        return self.ready_fields

    def spawn(self, run: str, spec: dict[str, Any], fds: Sequence[int]) -> None:
        """Fork a worker for ``run`` with ``spec`` and the run's two descriptors."""
        self.wait_ready()
        assert self.control is not None
        try:
            self.control.send("spawn", {"run": run, "spec": spec}, [], fds)
        except (OSError, ChannelError) as exc:
            self.stop()
            raise ZygoteFailure(f"the sealed workers' zygote is gone ({exc}); the next run starts a new one") from exc
        reply = self._receive(time.monotonic() + REPLY_TIMEOUT_S, ("spawned", "refused"), run)
        if reply.kind == "refused":
            raise ZygoteFailure(f"the zygote refused to start the run: {str(reply.fields.get('why'))[:200]}")

    def kill(self, run: str) -> None:
        """Ask the zygote to kill ``run``'s worker and everything it started."""
        if self.control is None:
            return
        try:
            self.control.send("kill", {"run": run})
        except (OSError, ChannelError):
            self.stop()

    def exit_of(self, run: str, deadline: float | None) -> dict[str, Any] | None:
        """The ``exited`` fields of ``run`` (code, peak_rss_mb) once the zygote reports it; None at the deadline."""
        for i, message in enumerate(self.pending):
            if message.kind == "exited" and message.fields.get("run") == run:
                return dict(self.pending.pop(i).fields)
        try:
            return dict(self._receive(deadline, ("exited",), run).fields)
        except ZygoteFailure:
            return None

    def poll_exit(self, run: str) -> dict[str, Any] | None:
        """Read what the zygote said (it is readable now); the ``exited`` fields of ``run`` if it ended."""
        try:
            message = self._receive_one(time.monotonic() + REPLY_TIMEOUT_S)
        except ZygoteFailure:
            return {"run": run, "code": None, "zygote_gone": True}
        self.pending.append(message)
        return self.exit_of(run, time.monotonic())

    def ask_to_quit(self) -> None:
        """Tell the zygote to quit, without waiting (:meth:`stop` waits): several zygotes then quit side by side."""
        if self.control is not None:
            with contextlib.suppress(OSError, ChannelError):
                self.control.send("quit", {})
            self.control.close()
            self.control = None

    def stop(self) -> None:
        """Stop the zygote and its sandbox (ask, then kill)."""
        self.ask_to_quit()
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    # -- plumbing ---------------------------------------------------------------------------
    def _receive(self, deadline: float | None, kinds: Sequence[str], run: str | None = None) -> Message:
        while True:
            for i, message in enumerate(self.pending):
                if message.kind in kinds and (run is None or message.fields.get("run") == run):
                    return self.pending.pop(i)
            self.pending.append(self._receive_one(deadline))

    def _receive_one(self, deadline: float | None) -> Message:
        if self.control is None:
            raise ZygoteFailure("the sealed workers' zygote is not running")
        try:
            message = self.control.receive(deadline=deadline, kinds=("ready", "spawned", "refused", "exited"),
                                           max_array_bytes=0)
        except ChannelError as exc:
            code = self.process.poll() if self.process is not None else None
            self.stop()
            raise ZygoteFailure(f"the sealed workers' zygote stopped answering ({exc}"
                                f"{f'; it exited with code {code}' if code is not None else ''})") from exc
        return message


__all__ = ["READY_TIMEOUT_S", "ZygoteFailure", "ZygoteProcess"]
