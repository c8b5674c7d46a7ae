"""Messages between the evaluator and a sealed worker: a small picklable header plus raw arrays.

A message is ``(kind, fields, arrays)``: ``kind`` a string, ``fields`` a dict of plain
values, ``arrays`` a list of NumPy arrays. The header travels pickled; each array's bytes
travel as one raw frame written straight from the array's memory and read straight into
a new array, so handing a plate over costs one copy through the pipe and no pickling of
pixels.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

import numpy as np

Message = tuple[str, dict[str, Any], list[np.ndarray]]


def send(conn: Connection, kind: str, fields: dict[str, Any] | None = None,
         arrays: list[np.ndarray] | tuple[np.ndarray, ...] = ()) -> None:
    """Send one message (see module docstring)."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    conn.send((kind, fields or {}, [(a.shape, a.dtype.str) for a in arrays]))
    for a in arrays:
        conn.send_bytes(memoryview(a).cast("B") if a.size else b"")


def receive(conn: Connection) -> Message:
    """Receive one message; raises ``EOFError`` when the other side is gone."""
    kind, fields, specs = conn.recv()
    arrays = []
    for shape, dtype in specs:
        a = np.empty(shape, dtype=np.dtype(dtype))
        if a.size:
            conn.recv_bytes_into(memoryview(a).cast("B"))
        else:
            conn.recv_bytes()
        arrays.append(a)
    return kind, fields, arrays
