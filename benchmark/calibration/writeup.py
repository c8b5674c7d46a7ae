"""The panel as a terminal table and as the markdown table of a data card.

A row's verdict is ``pass`` or ``FAIL`` against its target, ``reported`` for a finding with
no target (a simple baseline: never a miss) and ``–`` when it could not be measured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .panel import PanelResult, ProbeResult


def format_value(row: ProbeResult) -> str:
    """The measured value as shown (``0.912``, ``73.4 %``), or ``error: …``."""
    if row.measured is None:
        return f"error: {row.error}"
    if row.probe.unit == "share":
        return f"{100 * row.measured:.1f} %"
    return f"{row.measured:.3f}"


def verdict(row: ProbeResult) -> str:
    """``pass`` / ``FAIL`` against the target, ``reported`` for a measured probe with no target, ``–`` unmeasured."""
    if row.measured is not None and row.probe.reported:
        return "reported"
    return {True: "pass", False: "FAIL", None: "–"}[row.passed]


def tally(rows: Iterable[ProbeResult]) -> Counter[str]:
    """How many rows have each verdict (``pass``, ``FAIL``, ``reported``, ``–``); only ``FAIL`` rows are misses."""
    return Counter(verdict(row) for row in rows)


def summary_line(result: PanelResult) -> str:
    """``9 pass, 1 FAIL, 2 reported (no target), 0 not measured``."""
    n = tally(result.rows)
    return f"{n['pass']} pass, {n['FAIL']} FAIL, {n['reported']} reported (no target), {n['–']} not measured"


def profile_line(result: PanelResult) -> str:
    """One line: dataset, fingerprint, seeds and folds, fits run and reused, wall time."""
    s, ds, c = result.settings, result.dataset, result.counts
    folds = "all folds" if s.folds is None else f"fold {', '.join(map(str, s.folds))} of each split"
    smoke = "; smoke settings (methods' quick_overrides): numbers mean nothing" if s.smoke else ""
    return (f"{ds.name} {ds.meta.version}, fingerprint {ds.fingerprint}; seeds {', '.join(map(str, s.seeds))}, "
            f"{folds}{smoke}; {c['records_ok']} runs fitted, {c['records_skipped']} reused, "
            f"{c['label_shift_fitted']} label-shift fits, {c['label_shift_reused']} reused; {result.wall_s:.0f} s")


def print_table(result: PanelResult) -> None:
    """The panel as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    quick = " --quick" if result.settings.quick else ""
    table = Table(title=f"bench data calibrate{quick}", caption=f"{summary_line(result)}; {profile_line(result)}")
    for col in ("probe", "measured", "target", "pass", "from"):
        table.add_column(col, overflow="fold")
    for row in result.rows:
        mark = {"pass": "[green]pass[/]", "FAIL": "[red]FAIL[/]", "reported": "[cyan]reported[/]",
                "–": "[yellow]–[/]"}[verdict(row)]
        value = f"[yellow]{format_value(row)}[/]" if row.error else format_value(row)
        table.add_row(row.probe.title, value, row.probe.target.text(row.probe.unit), mark, row.detail)
    Console(width=200).print(table)


def markdown_table(result: PanelResult) -> str:
    """The panel as a markdown table (for the data card), with the profile line under it."""
    lines = ["| probe | measured | target | pass | from |", "|---|---|---|---|---|"]
    for row in result.rows:
        cells = [row.probe.title, format_value(row), row.probe.target.text(row.probe.unit), verdict(row),
                 row.detail]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    quick = " --quick" if result.settings.quick else ""
    lines += ["", f"{summary_line(result)}.", "",
              f"`bench data calibrate{quick}` on {profile_line(result)} ({result.created})."]
    return "\n".join(lines)
