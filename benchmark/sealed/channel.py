"""Messages between the evaluator and a sealed worker: a fixed schema that is parsed, never executed.

A message is a ``kind`` (string), ``fields`` (plain JSON values), ``arrays`` (NumPy arrays of a few
dtypes) and optionally file descriptors, sent over a connected ``AF_UNIX`` / ``SOCK_STREAM`` socket
as one frame::

    prefix   b"PBCH", format version (uint8), header length (uint32)    big-endian, 9 bytes
    header   UTF-8 JSON {"kind": str, "fields": {...},
                         "arrays": [{"dtype": str, "shape": [int, ...]}, ...], "fds": int}
    payload  each array's raw C-order bytes, little-endian, in order

File descriptors travel as ``SCM_RIGHTS`` ancillary data on the prefix's bytes.

The receiver checks, before it allocates anything beyond the header (at most
:data:`MAX_HEADER_BYTES`): the magic and version; the header length; that the header is a JSON
object with exactly those four keys; ``kind`` a string (and one of ``kinds`` when given);
``fields`` an object; each array's dtype one of :data:`ALLOWED_DTYPES` and its shape a list of at
most :data:`MAX_RANK` non-negative integers; the arrays' total size against ``max_array_bytes``;
the number of descriptors against ``max_fds``; then the caller's ``check``. Only then does it
allocate each array and read its bytes straight into it (``recv_into``). Every read (and, in
``send``, every write) waits at most until ``deadline``, so a peer that writes half a frame, or
stops reading, cannot hang the other side.

Why no pickle: unpickling runs code named by the data (any importable callable), so a worker that
could put a pickle on this path could run code in the evaluator. Here nothing is unpickled,
evaluated or imported by name: the header is JSON, the payload is bytes of a declared dtype.

After a :class:`ChannelError` from the middle of a frame the stream is out of step; the channel
then refuses further use. A :class:`ChannelTimeout` before any byte of a frame arrived leaves it
usable. A channel is not safe to use from two threads at once in the same direction.
"""

from __future__ import annotations

import array
import json
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

MAGIC = b"PBCH"
VERSION = 1
MAX_HEADER_BYTES: int = 1 << 20
MAX_RANK = 6
ALLOWED_DTYPES = ("float32", "float64", "uint8", "int64")

_PREFIX = struct.Struct(">4sBI")
_WIRE = {name: np.dtype(name).newbyteorder("<") for name in ALLOWED_DTYPES}
_HEADER_KEYS = {"kind", "fields", "arrays", "fds"}
_SPEC_KEYS = {"dtype", "shape"}
_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
_FD_SIZE = array.array("i").itemsize
_BUFFER_BYTES = 4 << 20


class ChannelError(Exception):
    """A frame that cannot be sent or is malformed; ``str(exc)`` is one line for a run's record."""


class ChannelClosed(ChannelError):
    """The other side closed the connection at a frame boundary (it exited or hung up)."""


class ChannelTimeout(ChannelError):
    """The deadline passed before a whole frame was sent or received."""


@dataclass(frozen=True)
class ArraySpec:
    """An array as a header declares it (dtype one of :data:`ALLOWED_DTYPES`)."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _WIRE[self.dtype].itemsize

    def __str__(self) -> str:
        return f"{self.shape} {self.dtype}"


@dataclass
class Message:
    """One received message; the receiver owns (and must close) ``fds``."""

    kind: str
    fields: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


class Channel:
    """One end of a connected AF_UNIX stream socket, speaking the frame format above.

    ``name`` says what arrives in error messages ("the worker's reply declares …").
    """

    def __init__(self, sock: socket.socket, *, name: str = "the message"):
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ChannelError(f"a channel needs an AF_UNIX stream socket, not {sock.family!r} {sock.type!r}")
        self.sock = sock
        self.name = name
        self._broken: str | None = None

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        """Two connected ends (``socket.socketpair``); neither is inheritable by a child process.

        Their buffers are raised to 4 MB where the system allows (about 1.5x the throughput of the
        default 208 kB for arrays of hundreds of MB).
        """
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock, option in ((s, o) for s in ends for o in (socket.SO_SNDBUF, socket.SO_RCVBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER_BYTES)
            except OSError:
                pass
        return cls(ends[0]), cls(ends[1])

    @classmethod
    def from_fd(cls, fd: int, *, name: str = "the message") -> Channel:
        """Adopt an inherited socket descriptor (the worker's end); the channel owns it.

        The descriptor is made non-inheritable, so programs the worker starts do not get it.
        """
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ChannelError(f"descriptor {fd} is not a socket ({exc})") from None
        sock.set_inheritable(False)
        return cls(sock, name=name)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------------------

    def send(self, kind: str, fields: Mapping[str, Any] | None = None, arrays: Sequence[np.ndarray] = (),
             fds: Sequence[int] = (), *, deadline: float | None = None) -> None:
        """Send one message; raises :class:`ChannelError` for one that cannot be framed or sent."""
        if self._broken:
            raise ChannelError(self._broken)
        if not isinstance(kind, str):
            raise ChannelError(f"a message's kind must be a string, not {type(kind).__name__}")
        try:
            plain = {_key(k, "fields"): plain_json(v, k) for k, v in (fields or {}).items()}
        except TypeError as exc:
            raise ChannelError(str(exc)) from None
        payload = [_wire_array(a, i) for i, a in enumerate(arrays)]
        header = json.dumps({"kind": kind, "fields": plain, "fds": len(fds),
                             "arrays": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in payload]},
                            separators=(",", ":")).encode()
        if len(header) > MAX_HEADER_BYTES:
            raise ChannelError(f"the {kind!r} message's header is {len(header)} bytes, more than the "
                               f"{MAX_HEADER_BYTES} allowed: send large values as arrays")
        head = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
        started = False  # once a write began, an error leaves a partial frame behind
        try:
            sent = 0
            if fds:
                self._set_timeout(deadline)
                started = True
                sent = self.sock.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            for buf in (memoryview(head)[sent:], *(_bytes(a) for a in payload)):
                if len(buf):
                    self._set_timeout(deadline)
                    started = True
                    self.sock.sendall(buf)
        except (TimeoutError, ChannelTimeout):
            error: ChannelError = ChannelTimeout(f"the other side did not take a {kind!r} message before the deadline")
        except OSError as exc:
            error = ChannelClosed(f"the other side closed the connection while a {kind!r} message was sent ({exc})")
        else:
            return
        if started:
            self._broken = f"channel unusable after an earlier error: {error}"
        raise error

    # -- receiving ------------------------------------------------------------------------------

    def receive(self, *, deadline: float | None = None, kinds: Collection[str] | None = None,
                check: Callable[[str, dict[str, Any], list[ArraySpec]], None] | None = None,
                max_array_bytes: int = 1 << 34, max_fds: int = 0) -> Message:
        """Receive one message, checking it as the module docstring says before allocating its arrays.

        ``deadline`` is a ``time.monotonic()`` value; ``check(kind, fields, specs)`` raises
        :class:`ChannelError` to refuse a message. At most ``max_fds`` descriptors are accepted;
        descriptors beyond the declared count are closed.
        """
        if self._broken:
            raise ChannelError(self._broken)
        fds: list[int] = []
        prefix = bytearray(_PREFIX.size)
        try:
            got = self._read_prefix(prefix, deadline, max_fds, fds)
            if got == 0:
                raise ChannelClosed("the other side closed the connection")
        except ChannelError:
            _close_all(fds)
            raise
        try:
            self._read(memoryview(prefix)[got:], deadline, "prefix", got)
            return self._parse(prefix, deadline, kinds, check, max_array_bytes, max_fds, fds)
        except BaseException as exc:  # the frame is partly read: the stream is out of step
            _close_all(fds)
            self._broken = f"channel unusable after an earlier error: {exc}"
            raise

    def _parse(self, prefix: bytearray, deadline: float | None, kinds: Collection[str] | None,
               check: Callable[[str, dict[str, Any], list[ArraySpec]], None] | None,
               max_array_bytes: int, max_fds: int, fds: list[int]) -> Message:
        magic, version, length = _PREFIX.unpack(prefix)
        name = self.name
        if magic != MAGIC:
            raise ChannelError(f"{name} is not a channel frame (it starts with {bytes(prefix)!r}, not {MAGIC!r})")
        if version != VERSION:
            raise ChannelError(f"{name} uses frame format {version}, this side reads format {VERSION}")
        if length > MAX_HEADER_BYTES:
            raise ChannelError(f"{name} declares a header of {length} bytes, more than the "
                               f"{MAX_HEADER_BYTES} allowed")
        raw = bytearray(length)
        self._read(memoryview(raw), deadline, "header", 0)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ChannelError(f"{name} has a header that is not JSON ({_one_line(exc)})") from None
        if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
            got = _short(list(header)) if isinstance(header, dict) else type(header).__name__
            raise ChannelError(f"{name} has a header that is not an object with keys "
                               f"{sorted(_HEADER_KEYS)} (got {got})")
        kind, fields, specs, nfds = header["kind"], header["fields"], header["arrays"], header["fds"]
        if not isinstance(kind, str):
            raise ChannelError(f"{name} has a kind that is not a string ({_short(kind)})")
        if kinds is not None and kind not in kinds:
            raise ChannelError(f"{name} is of kind {_short(kind)}, expected one of {', '.join(map(repr, kinds))}")
        name = f"{name} ({_short(kind)})"
        if not isinstance(fields, dict):
            raise ChannelError(f"{name} has fields that are not an object ({_short(fields)})")
        specs = _specs(specs, name, max_array_bytes)
        if type(nfds) is not int or not 0 <= nfds <= max_fds:
            raise ChannelError(f"{name} declares {_short(nfds)} file descriptors, at most {max_fds} allowed")
        if len(fds) < nfds:
            raise ChannelError(f"{name} declares {nfds} file descriptors but {len(fds)} arrived")
        _close_all(fds[nfds:])
        del fds[nfds:]
        if check is not None:
            check(kind, fields, specs)
        arrays = []
        for i, spec in enumerate(specs):
            a = np.empty(spec.shape, dtype=_WIRE[spec.dtype])
            self._read(memoryview(a.reshape(-1).view(np.uint8)), deadline, f"array {i} ({spec})", 0)
            arrays.append(a)
        return Message(kind, fields, arrays, list(fds))

    def _read_prefix(self, buf: bytearray, deadline: float | None, max_fds: int, fds: list[int]) -> int:
        """First read of a frame, taking its descriptors (extra ones are closed by the kernel)."""
        try:
            self._set_timeout(deadline)
            data, ancillary, _, _ = self.sock.recvmsg(len(buf), socket.CMSG_SPACE(max_fds * _FD_SIZE)
                                                      if max_fds else 0, _CLOEXEC)
        except (ChannelTimeout, TimeoutError):
            raise ChannelTimeout(f"{self.name} did not arrive before the deadline") from None
        except OSError as exc:
            raise ChannelClosed(f"the other side's connection failed ({exc})") from None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[:len(payload) - len(payload) % _FD_SIZE]))
        buf[:len(data)] = data
        return len(data)

    def _read(self, view: memoryview, deadline: float | None, what: str, done: int) -> None:
        """Fill ``view`` (``done`` bytes of the part were read before)."""
        total, pos = done + len(view), 0
        while pos < len(view):
            try:
                self._set_timeout(deadline)
                n = self.sock.recv_into(view[pos:])
            except (ChannelTimeout, TimeoutError):
                raise ChannelTimeout(f"{self.name} stopped in the middle of its {what} "
                                     f"({done + pos} of {total} bytes) until the deadline passed") from None
            except OSError as exc:
                raise ChannelError(f"{self.name} broke off in its {what} ({exc})") from None
            if n == 0:
                raise ChannelError(f"the other side closed the connection in the middle of {self.name}'s "
                                   f"{what} ({done + pos} of {total} bytes)")
            pos += n

    def _set_timeout(self, deadline: float | None) -> None:
        if deadline is None:
            self.sock.settimeout(None)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChannelTimeout("the deadline passed")
        self.sock.settimeout(left)


def _specs(raw: Any, name: str, max_array_bytes: int) -> list[ArraySpec]:
    if not isinstance(raw, list):
        raise ChannelError(f"{name} has an array list that is not a list ({_short(raw)})")
    specs, total = [], 0
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != _SPEC_KEYS:
            raise ChannelError(f"{name} declares array {i} as {_short(item)}, not {{'dtype': ..., 'shape': [...]}}")
        dtype, shape = item["dtype"], item["shape"]
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise ChannelError(f"{name} declares array {i} of dtype {_short(dtype)}, "
                               f"not one of {', '.join(ALLOWED_DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise ChannelError(f"{name} declares array {i} of shape {_short(shape)}, "
                               f"not a list of at most {MAX_RANK} non-negative integers")
        spec = ArraySpec(dtype, tuple(shape))
        total += spec.nbytes
        if total > max_array_bytes:
            raise ChannelError(f"{name} declares an array of shape {spec}, {_size(spec.nbytes)}"
                               f"{f' ({_size(total)} with the arrays before it)' if specs else ''}, "
                               f"more than the {_size(max_array_bytes)} allowed")
        specs.append(spec)
    return specs


def _wire_array(a: Any, i: int) -> np.ndarray:
    """``a`` as it travels: C-contiguous and little-endian (a copy only where it is not already)."""
    if not isinstance(a, np.ndarray):
        raise ChannelError(f"array {i} is a {type(a).__name__}, not a numpy array")
    if a.dtype.name not in ALLOWED_DTYPES or a.ndim > MAX_RANK:
        raise ChannelError(f"array {i} is {a.shape} {a.dtype}; a channel carries arrays of at most "
                           f"{MAX_RANK} dimensions of dtype {', '.join(ALLOWED_DTYPES)}")
    wire = _WIRE[a.dtype.name]
    return a if a.dtype == wire and a.flags.c_contiguous else np.array(a, dtype=wire, order="C")


def _bytes(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise ChannelError(f"{where}: key {key!r} is not a string")
    return key


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def _short(value: Any) -> str:
    """A parsed JSON value, shortened for an error message."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


# -- plain JSON values -------------------------------------------------------------------------

_MAX_DEPTH = 64
_MAX_LIST_ELEMENTS = 4096


def plain_json(value: Any, where: str = "value") -> Any:
    """A copy of ``value`` made of JSON values only (dicts with str keys, lists, str, int, float, bool, None).

    Tuples become lists, NumPy scalars Python scalars, small numeric NumPy arrays lists, paths
    strings. Anything else raises ``TypeError`` naming where it sits, e.g. ``fit_report['model']: a
    torch.nn.modules.module.Module is not a plain JSON value``.
    """
    return _plain(value, where, 0)


def _plain(value: Any, where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where}: nested more than {_MAX_DEPTH} levels deep (does it contain itself?)")
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (str, PurePath)):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            out[str(k)] = _plain(v, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if value.size > _MAX_LIST_ELEMENTS:
            raise TypeError(f"{where}: a numpy array of {value.size} elements is too large for a plain JSON "
                            f"value (at most {_MAX_LIST_ELEMENTS}); send it as an array")
        return _plain(value.tolist(), where, depth)
    raise TypeError(f"{where}: {_describe(value)} is not a plain JSON value")


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    t = type(value)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    if isinstance(value, np.ndarray):
        name += f" of dtype {value.dtype}"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
