"""The sealed worker's second wall: a Linux Landlock ruleset that makes the protected folders unreadable.

The audit hook (:mod:`benchmark.sealed.audit`) sees only what Python code asks the
interpreter to do; native code that opens a file itself (polars or pyarrow reading a path,
``torch.from_file``, a C extension) is not seen. Landlock (Linux >= 5.13) is enforced by
the kernel on every ``open``, whoever calls it: after :func:`restrict_reads`, reading a
file or listing a folder is allowed only beneath the rules added here, for this thread and
every thread and process it starts. It also bars ``ptrace``-style access to processes
outside the ruleset, so ``/proc/<evaluator>/mem`` and ``process_vm_readv`` are refused.

Landlock rules only *allow*: there is no "everything but the cache". The ruleset therefore
allows the complement of the protected folders: starting at ``/``, every entry that neither
is nor contains a protected folder is allowed whole; an entry that contains one is entered
and treated the same way; the protected folders themselves are left out, except the
folders the run may read (its sealed fold folder). Only reading is handled (``READ_FILE``,
``READ_DIR``); writing stays with the audit hook. A file created after the ruleset in a
folder that was entered rather than allowed whole (e.g. directly in ``/tmp`` when the cache
lives in ``/tmp``) cannot be read back; the worker's temporary folder is allowed explicitly.

Where Landlock is missing (another OS, an old kernel, a seccomp filter) or switched off with
``PLATEBENCH_SANDBOX=audit``, the worker runs with the audit hook alone; the record's
``worker.sandbox`` says which.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterable

SANDBOX_ENV = "PLATEBENCH_SANDBOX"
"""``audit`` switches Landlock off (audit hook only); unset or ``landlock``: use it where the kernel has it."""

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # x86_64 and aarch64 (unified table)
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
"""Every filesystem right the kernel knows, by the first ABI that has them (2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV)."""
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_NET_TCP = (1 << 0) | (1 << 1)  # ABI 4: bind and connect TCP ports
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_PR_SET_NO_NEW_PRIVS = 38


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _RulesetAttrV6(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 where there is none (not Linux, too old, disabled)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    try:
        version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def allowed_paths(protected: Iterable[str], readable: Iterable[str], root: str = os.sep) -> list[str]:
    """The paths whose trees together cover everything readable: the complement of ``protected``
    (resolved folders) under ``root``, plus the ``readable`` folders inside protected ones.

    Symbolic links are skipped (what they point at is reached by its own path and judged there).
    """
    protected = [os.path.realpath(p) for p in protected]
    out: list[str] = []

    def visit(folder: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            path = entry.path
            if entry.is_symlink() or any(_under(path, p) for p in protected):
                continue
            if any(_under(p, path) for p in protected) and entry.is_dir(follow_symlinks=False):
                visit(path)
            else:
                out.append(path)

    if not any(_under(p, root) for p in protected):
        return [root, *readable]
    visit(root)
    return out + [os.path.realpath(p) for p in readable if os.path.exists(p)]


def restrict_reads(protected: Iterable[str], readable: Iterable[str]) -> str:
    """Allow this process to read only outside ``protected`` (and inside ``readable``); say what was applied.

    Returns ``"landlock ABI <n>"`` when the ruleset is in force, else ``"audit hook only (<why>)"``.
    Must run while the process has a single thread: Landlock binds the calling thread and what it starts.
    """
    if os.environ.get(SANDBOX_ENV, "").strip().lower() == "audit":
        return f"audit hook only ({SANDBOX_ENV}=audit)"
    abi = abi_version()
    if abi == 0:
        return "audit hook only (this kernel has no Landlock)"
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        return f"audit hook only (the worker already runs {threads} threads; Landlock would bind only one)"
    libc = _libc()
    attr = _RulesetAttr(_READ_FILE | _READ_DIR)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return f"audit hook only (landlock_create_ruleset: {os.strerror(ctypes.get_errno())})"
    try:
        for path in allowed_paths(protected, readable):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # vanished since it was listed
            try:
                rights = _READ_FILE | _READ_DIR if os.path.isdir(path) else _READ_FILE
                rule = _PathBeneathAttr(rights, fd)
                if libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    return f"audit hook only (landlock_add_rule {path}: {os.strerror(ctypes.get_errno())})"
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"audit hook only (prctl no_new_privs: {os.strerror(ctypes.get_errno())})"
        if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            return f"audit hook only (landlock_restrict_self: {os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    return f"landlock ABI {abi}"


def _fs_rights(abi: int) -> int:
    return max((rights for first, rights in _FS_RIGHTS_BY_ABI.items() if abi >= first), default=0)


def restrict_to(readable: Iterable[str], writable: Iterable[str], devices: Iterable[str] = ("/dev",)) -> str:
    """An allowlist for this process and everything it starts: read (and execute) only beneath ``readable``,
    write only beneath ``writable``, read, write and use devices beneath ``devices``; no TCP (ABI >= 4); no
    signals to, and no abstract-socket connections with, processes outside this ruleset (ABI >= 6).

    Returns what was applied, e.g. ``"landlock ABI 7 (allowlist; signals and abstract sockets scoped)"``, or
    ``"audit hook only (<why>)"`` when nothing could be applied. Must run while the process has one thread.
    """
    if os.environ.get(SANDBOX_ENV, "").strip().lower() == "audit":
        return f"audit hook only ({SANDBOX_ENV}=audit)"
    abi = abi_version()
    if abi == 0:
        return "audit hook only (this kernel has no Landlock)"
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads != 1:
        return f"audit hook only (the process already runs {threads} threads; Landlock would bind only one)"
    libc = _libc()
    every = _fs_rights(abi)
    read = _EXECUTE | _READ_FILE | _READ_DIR
    device = read | _WRITE_FILE | (every & (_TRUNCATE | _IOCTL_DEV))
    attr: ctypes.Structure
    if abi >= 6:
        attr = _RulesetAttrV6(every, _NET_TCP, _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL)
    elif abi >= 4:
        attr = _RulesetAttrV6(every, _NET_TCP, 0)
    else:
        attr = _RulesetAttr(every)
    size = ctypes.sizeof(attr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return f"audit hook only (landlock_create_ruleset: {os.strerror(ctypes.get_errno())})"
    try:
        for paths, rights in ((readable, read), (writable, every), (devices, device)):
            for path in paths:
                problem = _add_rule(libc, ruleset, path, rights)
                if problem:
                    return f"audit hook only ({problem})"
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"audit hook only (prctl no_new_privs: {os.strerror(ctypes.get_errno())})"
        if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            return f"audit hook only (landlock_restrict_self: {os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    scoped = "; signals and abstract sockets scoped" if abi >= 6 else "; signals NOT scoped (Landlock ABI < 6)"
    return f"landlock ABI {abi} (allowlist{scoped})"


_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
"""The rights that apply to a file (a rule on a file may hold only these)."""


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> str | None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None  # absent here: nothing to allow
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        if libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            return f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(fd)
    return None
