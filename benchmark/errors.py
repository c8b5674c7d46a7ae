"""One exception family for user errors, caught at the CLI boundary.

Every message says what is wrong, where (file, column, plate), what is valid and
what to do next. The CLI prints it as one line and exits with code 1; set
``PLATEBENCH_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """A problem the user can fix; the message says how."""


class UnknownNameError(BenchError, KeyError):
    """An unknown method, split, dataset or preset name."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'. Valid {kind}s: {', '.join(valid)}.{hint}")
        self.kind, self.name, self.valid = kind, name, valid

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class DataError(BenchError):
    """A dataset, index, shard or metadata table is missing, corrupt or malformed."""


class CorruptCacheError(DataError):
    """A cached dataset does not match its manifest (truncated or altered shard)."""


class MethodError(BenchError):
    """A method failed, or asked for more than its access level allows."""


class LeakageError(MethodError):
    """A method tried to reach target labels or data beyond its access level."""
