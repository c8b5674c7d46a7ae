"""Shared CLI pieces: the error boundary and options used by several commands."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ..errors import BenchError

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "PLATEBENCH_DEBUG"


def handle_errors(func: F) -> F:
    """Turn a :class:`BenchError` into one line on stderr and exit code 1.

    Set ``PLATEBENCH_DEBUG=1`` to see the traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BenchError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished records are kept, rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
