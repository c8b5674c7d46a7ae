"""The sealed worker's kernel wall (Linux Landlock): an allowlist for reading, writing, signals and sockets.

The audit hook (:mod:`benchmark.sealed.audit`) sees only what Python code asks the interpreter to do; native
code that opens a file itself (polars or pyarrow reading a path, ``torch.from_file``, a C extension) is not seen.
Landlock (Linux >= 5.13) is enforced by the kernel on every access, whoever makes it: after :func:`restrict_to`,
this process and everything it starts may read (and execute) only beneath the folders it was given, write only
beneath its scratch folder, use only the listed devices, open no TCP connection (ABI >= 4), and neither signal
nor connect to an abstract Unix socket of a process outside its own ruleset (ABI >= 6). Landlock also bars
``ptrace``-style access to processes outside the ruleset (``/proc/<pid>/mem``, ``process_vm_readv``).

Under bubblewrap (:mod:`benchmark.sealed.sandbox`) this is a second wall inside the namespaces: it narrows the
sealed stores bound into the sandbox to the run's own fold. Without namespaces it is the main wall. Where Landlock
is missing (another OS, an old kernel) or switched off with ``PLATEBENCH_SANDBOX=audit``, the worker runs with
the audit hook alone; the record's ``worker.sandbox`` says which.
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


def _fs_rights(abi: int) -> int:
    return max((rights for first, rights in _FS_RIGHTS_BY_ABI.items() if abi >= first), default=0)


def restrict_to(readable: Iterable[str], writable: Iterable[str], devices: Iterable[str] = ("/dev",),
                network: bool = False) -> str:
    """An allowlist for this process and everything it starts: read (and execute) only beneath ``readable``,
    write only beneath ``writable``, read, write and use devices beneath ``devices``; no TCP (ABI >= 4; unless
    ``network``, for torchrun ranks); no
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
    net = 0 if network else _NET_TCP  # torchrun ranks' workers train together over TCP
    if abi >= 6:
        attr = _RulesetAttrV6(every, net, _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL)
    elif abi >= 4:
        attr = _RulesetAttrV6(every, net, 0)
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
