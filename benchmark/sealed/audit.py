"""The sealed worker's PEP 578 audit hook: what a method may not do, and what happens when it tries.

The hook is the first thing a sealed worker installs (before the method's module is
imported), and it stays for the life of the process and of every process it forks.
It refuses:

- opening, memory-mapping, listing, linking, renaming or removing the full dataset's
  files (``index.parquet``, ``dataset.json``, shards) or anything under the dataset
  folder or the platebench cache, except this run's own sealed fold folder; paths are
  compared after resolving symbolic links, and files also by ``(st_dev, st_ino)``, so a
  hard link or a symbolic link elsewhere is caught;
- reading ``/proc/<pid>/`` of any other process (the evaluator holds the labels);
- starting a process that would not carry the hook (``subprocess``, ``os.system``,
  ``os.exec*``, ``os.posix_spawn``, ``os.spawn*``, multiprocessing's ``spawn`` and
  ``forkserver``); ``os.fork`` keeps the hook and is allowed (DataLoader workers);
- connecting to the forkserver's socket, or signalling the evaluator;
- once the worker is set up (:meth:`Hook.seal`): loading native code with ``ctypes``
  and walking the interpreter's objects with ``gc.get_objects`` / ``get_referrers`` /
  ``get_referents``.

A refused attempt is not an exception the method could catch: the hook writes one line
saying what was tried to the report pipe the evaluator reads, and ends the process at
once with exit code :data:`VIOLATION_EXIT`. The evaluator then fails the record with
that line.

An audit hook is not a sandbox. It sees what Python code asks the interpreter to do.
Native code that opens files itself is not seen: a C extension, or polars or pyarrow
reading a path (``pl.read_parquet``, ``pyarrow.memory_map``); neither are ``ctypes``
function pointers taken while the method's module was imported, a built-in module
re-created to undo a patch, or a file opened relative to a directory descriptor of a
folder that is not an ancestor of a protected one. That is the documented residual
risk (``docs/sealed.md``): the worker never holds a target label, so what is left is
reaching for the dataset's files behind the interpreter's back, on purpose.
"""

from __future__ import annotations

import os
import re
import select
import signal
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

VIOLATION_EXIT = 87
"""Exit code of a worker the hook stopped (the line saying why is on the report pipe)."""

_PROC = re.compile(r"^/proc/(\d+)(?:/|$)")
_PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile")
_PATH_EVENTS = {  # event -> positions of its path arguments, and the verb for the report
    "open": ((0,), "open"),
    "os.listdir": ((0,), "list the folder"),
    "os.scandir": ((0,), "list the folder"),
    "os.link": ((0, 1), "hard-link"),
    "os.symlink": ((0, 1), "make a symbolic link to"),
    "os.rename": ((0, 1), "rename"),
    "os.remove": ((0,), "remove"),
    "os.rmdir": ((0,), "remove the folder"),
    "os.mkdir": ((0,), "create a folder at"),
    "os.truncate": ((0,), "truncate"),
    "os.chmod": ((0,), "change the mode of"),
    "os.chown": ((0,), "change the owner of"),
    "os.utime": ((0,), "change the times of"),
}
_SEALED_EVENTS = {
    "ctypes.dlopen": "load native code after set-up (ctypes.dlopen {0})",
    "ctypes.dlsym": "look up native code after set-up (ctypes.dlsym {1})",
    "ctypes.dlsym/handle": "look up native code after set-up (ctypes.dlsym {1})",
    "ctypes.call_function": "call native code through ctypes after set-up",
    "gc.get_objects": "walk every object of the process (gc.get_objects)",
    "gc.get_referrers": "walk the objects that refer to an object (gc.get_referrers)",
    "gc.get_referents": "walk the objects an object refers to (gc.get_referents)",
}


@dataclass(frozen=True)
class Policy:
    """What the hook protects; built by the evaluator (:func:`benchmark.sealed.policy.build_policy`).

    Parameters
    ----------
    protected : (folder, what it is) pairs, resolved paths; nothing under them may be touched.
    allowed : folders inside protected ones that may be read (this run's sealed fold folder).
    files : resolved path -> description, for the protected files worth naming (index, shards).
    inodes : (st_dev, st_ino) -> resolved path of every protected file and folder (hard links).
    sockets : socket addresses the method may not connect to.
    pids : processes the method may not signal (the evaluator, the zygote).
    readable, writable : the allowlist (resolved folders), when given: nothing outside ``readable`` may be
        read and nothing outside ``writable`` written, protected or not (the same allowlist as Landlock's).
    """

    protected: tuple[tuple[str, str], ...]
    allowed: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    inodes: Mapping[tuple[int, int], str] = field(default_factory=dict)
    sockets: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    readable: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()

    def bases(self) -> tuple[str, ...]:
        """Folders a relative path may have been opened from (a directory descriptor): the ancestors of the
        protected folders that are not themselves protected."""
        out: list[str] = []
        for root, _ in self.protected:
            parent = os.path.dirname(root)
            while parent and parent not in out:
                if not any(_under(parent, folder) for folder, _ in self.protected):
                    out.append(parent)
                if parent == os.path.dirname(parent):
                    break
                parent = os.path.dirname(parent)
        return tuple(out)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Hook:
    """The audit hook of one sealed worker (install it with :func:`install`)."""

    def __init__(self, policy: Policy, report_fd: int, exit: Callable[[int], Any] = os._exit):
        self.policy = policy
        self.report_fd = report_fd
        self.sealed = False
        self._exit = exit
        self._bases = policy.bases()

    def seal(self) -> None:
        """From now on also refuse native code loading and object walking (the worker is set up)."""
        self.sealed = True

    # -- the hook ---------------------------------------------------------------------------
    def __call__(self, event: str, args: tuple) -> None:
        if event in _PATH_EVENTS:
            positions, verb = _PATH_EVENTS[event]
            writes = event not in _READ_EVENTS or (event == "open" and _opens_for_writing(args))
            for i in positions:
                if i < len(args):
                    problem = self.path_problem(args[i], verb) or self.outside_problem(args[i], verb, writes)
                    if problem:
                        self.violation(problem)
        elif event == "mmap.__new__":
            if args and isinstance(args[0], int) and args[0] >= 0:
                problem = self.path_problem(args[0], "memory-map")
                if problem:
                    self.violation(problem)
        elif event in _PROCESS_EVENTS:
            self.violation(f"start a process ({event}: {_command(event, args)}), which would run without this "
                           "hook; only os.fork is allowed")
        elif event == "socket.connect":
            address = args[1] if len(args) > 1 else None
            if isinstance(address, bytes):
                address = os.fsdecode(address)
            if isinstance(address, str) and address in self.policy.sockets:
                self.violation(f"connect to the forkserver's socket {address} (it starts processes without this hook)")
        elif event in ("os.kill", "os.killpg"):
            pid = args[0] if args else None
            if event == "os.killpg" or (isinstance(pid, int) and (pid <= 0 or pid in self.policy.pids)):
                self.violation(f"send signal {_signal_name(args[1] if len(args) > 1 else None)} to process "
                               f"{'group ' if event == 'os.killpg' else ''}{pid} (the evaluator's)")
        elif self.sealed and event in _SEALED_EVENTS:
            self.violation(_SEALED_EVENTS[event].format(*[_short(a) for a in args], "", ""))

    def violation(self, problem: str) -> None:
        """Write ``the method tried to <problem>`` to the report pipe and end the process."""
        line = f"the method tried to {problem}".encode(errors="replace")[:4000]
        try:
            os.write(self.report_fd, struct.pack("!i", len(line)) + line)  # multiprocessing Connection framing
        except OSError:
            pass
        self._exit(VIOLATION_EXIT)

    # -- paths ------------------------------------------------------------------------------
    def path_problem(self, path: Any, verb: str) -> str | None:
        """What is wrong with touching ``path`` (a path, bytes or a file descriptor), or None."""
        text = _as_text(path)
        if text is None:
            return None
        candidates = [text] if os.path.isabs(text) else [_join_cwd(text)] + [os.path.join(b, text) for b in self._bases]
        for candidate in candidates:
            if candidate is None:
                continue
            absolute = os.path.normpath(candidate)
            real = os.path.realpath(absolute)
            for p in (absolute, real):
                problem = self._proc_problem(p, text, verb)
                if problem:
                    return problem
                what = self._protected(p)
                if what:
                    return f"{verb} {text} ({what})" if p == text else f"{verb} {text} ({p}: {what})"
            try:
                st = os.stat(real)
            except (OSError, ValueError):
                continue
            target = self.policy.inodes.get((st.st_dev, st.st_ino))
            if target and not self._allowed(real):
                return f"{verb} {text} (a link to {target}, {self.policy.files.get(target) or self._protected(target)})"
        return None

    def outside_problem(self, path: Any, verb: str, writes: bool) -> str | None:
        """Whether ``path`` lies outside the allowlist (``writable`` for a write, else ``readable`` or
        ``writable``); None when the policy has no allowlist or the path is inside it."""
        if not (self.policy.readable or self.policy.writable):
            return None
        text = _as_text(path)
        if text is None:
            return None
        absolute = text if os.path.isabs(text) else _join_cwd(text)
        if absolute is None:
            return None
        real = os.path.realpath(os.path.normpath(absolute))
        if not writes and not os.path.lexists(real):
            return None  # nothing there to read (libraries probe many paths); the kernel's rules still apply
        roots = self.policy.writable if writes else (*self.policy.readable, *self.policy.writable)
        if any(_under(real, root) for root in roots):
            return None
        where = "write outside the run's scratch folder" if writes else "read outside what the worker is given"
        return f"{verb} {text} ({where}: Python, platebench, the method's package and its fold's sealed store)"

    def _protected(self, path: str) -> str | None:
        for root, what in self.policy.protected:
            if _under(path, root) and not self._allowed(path):
                return self.policy.files.get(path) or what
        return None

    def _allowed(self, path: str) -> bool:
        return any(_under(path, folder) for folder in self.policy.allowed)

    @staticmethod
    def _proc_problem(path: str, text: str, verb: str) -> str | None:
        match = _PROC.match(path)
        if not match:
            return None
        pid = int(match.group(1))
        if pid == os.getpid() or os.path.isdir(f"/proc/self/task/{pid}"):
            return None
        return f"{verb} {text} (the /proc entry of another process, {pid}; the evaluator's memory holds the labels)"


_READ_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _opens_for_writing(args: tuple) -> bool:
    """Whether an ``open`` audit event (path, mode, flags) opens for writing."""
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else 0
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _as_text(path: Any) -> str | None:
    """A path argument as text; a file descriptor becomes the path it is open on; None if neither."""
    if isinstance(path, int):
        try:
            target = os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return None
        return target if os.path.isabs(target) else None  # pipe:[...], socket:[...]: not files
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    return text or None


def _join_cwd(text: str) -> str | None:
    try:
        return os.path.join(os.getcwd(), text)
    except OSError:
        return None


def _command(event: str, args: tuple) -> str:
    if event == "subprocess.Popen" and len(args) > 1:
        argv = args[1]
        return " ".join(os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else str(a)
                        for a in (argv if isinstance(argv, (list, tuple)) else [argv]))
    if event in ("os.exec", "os.posix_spawn", "os.spawn") and len(args) > 1:
        argv = args[1] if event != "os.spawn" else args[2]
        return " ".join(map(str, argv)) if isinstance(argv, (list, tuple)) else str(argv)
    return _short(args[0]) if args else ""


def _short(value: Any, limit: int = 200) -> str:
    text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _signal_name(sig: Any) -> str:
    try:
        return signal.Signals(sig).name
    except (ValueError, TypeError):
        return str(sig)


def _refuse_fork_exec(hook: Hook) -> None:
    """Patch ``_posixsubprocess.fork_exec`` (it raises no audit event; subprocess and multiprocessing use it)."""
    try:
        import _posixsubprocess
    except ImportError:
        return
    original = _posixsubprocess.fork_exec

    def fork_exec(*args: Any, **kwargs: Any) -> Any:
        argv = args[0] if args else []
        command = " ".join(os.fsdecode(a) for a in argv) if isinstance(argv, (list, tuple)) else str(argv)
        hook.violation(f"start a process (_posixsubprocess.fork_exec: {command}), which would run without this "
                       "hook (multiprocessing's spawn and forkserver start methods too); only os.fork is allowed")
        return original(*args, **kwargs)  # not reached

    _posixsubprocess.fork_exec = fork_exec


def read_violation(fd: int) -> str | None:
    """The audit hook's line (a 4-byte length, then text), read without blocking; None when there is none."""
    ready, _, _ = select.select([fd], [], [], 0)
    if not ready:
        return None
    try:
        head = os.read(fd, 4)
        if len(head) < 4:
            return None
        (length,) = struct.unpack("!i", head)
        data = os.read(fd, max(0, min(length, 4000)))
    except OSError:
        return None
    return data.decode(errors="replace") or None


def install(policy: Policy, report_fd: int) -> Hook:
    """Install the hook for ``policy`` in this process (it can never be removed); returns it to :meth:`Hook.seal`."""
    hook = Hook(policy, report_fd)
    sys.addaudithook(hook)
    _refuse_fork_exec(hook)
    return hook
