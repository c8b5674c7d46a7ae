"""The sweep's live table (rich) and its final summary.

While a sweep runs, a terminal shows one table, refreshed twice a second: how many units are done,
running, queued (SLURM), failed and skipped, the running units with their elapsed time and the
latest failures. Each unit that ends also prints one line above it, so a log file or a pipe (no
live table there) still gets one line per unit. At the end, :meth:`SweepProgress.summary` prints
every unit that ran, with its accuracies, time and note, the counts, and the sweep's wall time beside
the expected one (:mod:`benchmark.sweep.clock`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .clock import Expected, actual_line
from .grid import Unit
from .unit import UnitResult

_MAX_ROWS = 12  # running units shown in the live table (the rest are counted)


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


class SweepProgress:
    """Counts and rows of one sweep; a context manager that shows them live on a terminal."""

    def __init__(self, total: int, skipped: Sequence[Unit], console: Console | None = None, title: str = "bench sweep"):
        self.console = console or Console()
        self.total, self.skipped, self.title = total, list(skipped), title
        self.running: dict[Unit, float] = {}
        self.queued: set[Unit] = set()
        self.results: list[UnitResult] = []
        self.expected: Expected | None = None  # the wall time expected of the units to run (set by run_sweep)
        self._start = time.monotonic()
        self._live: Live | None = None

    # -- events -------------------------------------------------------------------------------------------
    def mark_queued(self, unit: Unit) -> None:
        """``unit`` waits in the cluster's queue."""
        self.queued.add(unit)

    def mark_running(self, unit: Unit) -> None:
        """``unit`` started (now, or when first seen running)."""
        self.queued.discard(unit)
        self.running.setdefault(unit, time.monotonic())

    def mark_finished(self, result: UnitResult) -> None:
        """``result``'s unit ended: count it and print its line."""
        self.queued.discard(result.unit)
        self.running.pop(result.unit, None)
        self.results.append(result)
        self.console.print(self.line(result), highlight=False, soft_wrap=True)

    # -- views --------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the sweep started."""
        return time.monotonic() - self._start

    def counts(self) -> dict[str, int]:
        """done (recorded now), skipped (already recorded before or by the protocol), failed, running, queued."""
        ran = {s: sum(r.status == s for r in self.results) for s in ("ok", "skipped", "failed")}
        return {"done": ran["ok"], "skipped": len(self.skipped) + ran["skipped"], "failed": ran["failed"],
                "running": len(self.running), "queued": len(self.queued)}

    def line(self, result: UnitResult) -> Text:
        """``[ 3/12] ok      erm source_out fold 0 seed 0: out-of-domain 0.812, in-domain 0.850 (12.3 s)``."""
        ended = len(self.skipped) + len(self.results)
        width = len(str(self.total))
        head = f"[{ended:>{width}}/{self.total}] "
        if result.status == "failed":
            where = f" (log: {result.log})" if result.log else ""
            return Text(head) + Text("FAILED  ", style="red") + Text(f"{result.unit.label}: {result.error}{where}")
        if result.status == "skipped":
            return Text(f"{head}skipped {result.unit.label}: already recorded")
        return Text(head) + Text("ok      ", style="green") + Text(
            f"{result.unit.label}: out-of-domain {_acc(result.out_of_domain_accuracy)}, "
            f"in-domain {_acc(result.in_domain_accuracy)} ({result.seconds:.1f} s)")

    def table(self) -> Any:
        """The live view: counts, the running units and the latest failures."""
        c = self.counts()
        elapsed = time.monotonic() - self._start
        head = Text(f"{self.title}: {c['done']} done · {c['running']} running · "
                    + (f"{c['queued']} queued · " if c["queued"] else "")
                    + f"{c['failed']} failed · {c['skipped']} skipped · "
                    f"{self.total - sum(c.values())} waiting, of {self.total} units ({elapsed:.0f} s)")
        table = Table(show_edge=False, pad_edge=False)
        for col in ("unit", "state", "time (s)", "note"):
            table.add_column(col)
        now = time.monotonic()
        running = sorted(self.running.items(), key=lambda kv: kv[1])
        for unit, since in running[:_MAX_ROWS]:
            table.add_row(unit.label, "[yellow]running[/]", f"{now - since:.0f}", "")
        if len(running) > _MAX_ROWS:
            table.add_row(f"… {len(running) - _MAX_ROWS} more running", "", "", "")
        for r in [r for r in self.results if r.status == "failed"][-5:]:
            table.add_row(r.unit.label, "[red]FAILED[/]", f"{r.seconds:.0f}", (r.error or "")[:80])
        return Group(head, table)

    def summary(self) -> None:
        """Print every unit that ran (accuracies, time, note) and the counts."""
        table = Table(title=f"{self.title} summary")
        for col in ("method", "split", "fold", "seed", "status", "out-of-domain acc.", "in-domain acc.", "time (s)",
                    "note"):
            table.add_column(col)
        for r in self.results:
            status = {"ok": "[green]ok[/]", "skipped": "skipped", "failed": "[red]FAILED[/]"}[r.status]
            note = r.error or r.unit.record
            if r.status == "failed" and r.log:
                note = f"{note} (log: {r.log})"
            u = r.unit
            table.add_row(u.method, u.split, str(u.fold), str(u.seed), status, _acc(r.out_of_domain_accuracy),
                          _acc(r.in_domain_accuracy), f"{r.seconds:.1f}", note)
        if self.results:  # a pipe or log file gets bench run's width, a terminal its own
            out = self.console if self.console.is_terminal else Console(width=200, file=self.console.file)
            out.print(table)
        c = self.counts()
        unfinished = self.total - c["done"] - c["skipped"] - c["failed"]
        tail = f", {unfinished} not finished" if unfinished else ""
        self.console.print(f"{c['done']} done, {c['skipped']} skipped (already recorded), {c['failed']} failed{tail}, "
                           f"of {self.total} units, in {self.elapsed():.1f} s", highlight=False)
        if self.results:
            self.console.print(actual_line(self.elapsed(), self.expected), highlight=False, soft_wrap=True)

    # -- the live display ---------------------------------------------------------------------------------
    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            self._live = Live(get_renderable=self.table, console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)  # type: ignore[arg-type]
            self._live = None


__all__ = ["SweepProgress"]
