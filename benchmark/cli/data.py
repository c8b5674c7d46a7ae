"""`bench data`: generate, describe and look at datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..datasets import load_dataset
from ..errors import BenchError
from .common import handle_errors

data_app = typer.Typer(help="Generate, describe and look at datasets.", no_args_is_help=True)

DatasetArg = Annotated[str, typer.Argument(help="Dataset name (`bench data info` lists them) or path to a "
                                            "prepared dataset folder.")]


def _open(name: str, progress: bool = True):
    if name == "synthetic":
        return load_dataset(name, progress=progress)
    return load_dataset(name)


@data_app.command("synth")
@handle_errors
def synth(
    seed: Annotated[int, typer.Option(help="Simulator seed: the whole experiment is a function of it.")] = 0,
    severity: Annotated[float, typer.Option(help="Scale of all technical (batch) effects; 0 = every source looks the same.")] = 1.0,
    size: Annotated[str, typer.Option(help="Size preset: tiny, default or large.")] = "default",
) -> None:
    """Generate (or find in the cache) the synthetic dataset and summarise it."""
    if severity < 0:
        raise BenchError(f"--severity must be >= 0, got {severity}; 0 turns technical effects off, 1 is the default")
    dataset = load_dataset("synthetic", seed=seed, severity=severity, size=size, progress=True)
    _print_summary(dataset)


@data_app.command("info")
@handle_errors
def info(
    name: Annotated[str | None, typer.Argument(help="Dataset name or path to a prepared dataset folder; "
                                               "without it, list every registered dataset.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (or the list) as JSON on stdout.")]
    = False,
) -> None:
    """Counts per source, batch, plate and class; controls; fingerprint. Without NAME: every dataset and its origin."""
    if name is None:
        _print_datasets(as_json)
        return
    dataset = _open(name, progress=not as_json)
    if as_json:
        from ..datasets.summary import dataset_summary

        typer.echo(json.dumps(dataset_summary(dataset), indent=1, default=str))
    else:
        _print_summary(dataset)


def _print_datasets(as_json: bool) -> None:
    """One line per registered dataset: name, origin (platebench or the plugin package), description."""
    from ..datasets import available_datasets
    from ..plugins import DATASETS_GROUP, plugin_problems

    datasets = available_datasets()
    if as_json:
        typer.echo(json.dumps([{"name": e.name, "origin": e.origin, "description": e.description}
                               for e in datasets.values()], indent=1))
    else:
        width = max([len(n) for n in datasets] + [7])
        owidth = max([len(e.origin) for e in datasets.values()] + [6])
        typer.echo(f"{'dataset':<{width}}  {'origin':<{owidth}}  description")
        for entry in datasets.values():
            typer.echo(f"{entry.name:<{width}}  {entry.origin:<{owidth}}  {entry.description}")
        typer.echo("`bench data info NAME` describes one (a path to a prepared folder works too).")
    for problem in plugin_problems(DATASETS_GROUP):
        typer.echo(f"warning: {problem}", err=True)


@data_app.command("show")
@handle_errors
def show(
    name: DatasetArg = "synthetic",
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("montage.png"),
    seed: Annotated[int, typer.Option(help="Which example images to pick.")] = 0,
) -> None:
    """Write a PNG montage: one row per source, one column per compound plus DMSO (Cell Painting false colour)."""
    from ..report.montage import write_montage

    dataset = _open(name)
    path = write_montage(dataset, out, seed=seed)
    typer.echo(f"wrote {path}")


def _print_summary(dataset) -> None:
    from ..datasets.summary import dataset_summary

    s = dataset_summary(dataset)
    console = Console()
    console.print(f"[bold]{s['name']}[/bold] {s['version']}  fingerprint [bold]{s['fingerprint']}[/bold]  ({s['root']})")
    if s["description"]:
        console.print(s["description"])
    console.print(f"{s['n_images']} site images ({s['n_treated']} treated, {s['n_controls']} DMSO) of shape "
                  f"{'x'.join(map(str, s['image_shape']))} ({', '.join(s['channels'])}); {s['n_sources']} sources, "
                  f"{s['n_batches']} batches, {s['n_plates']} plates, sites per well {s['sites_per_well']}")
    table = Table(title="per source")
    for col in ("source", "batches", "plates", "treated", "controls"):
        table.add_column(col, justify="right" if col != "source" else "left")
    for row in s["per_source"]:
        table.add_row(*(str(row[c]) for c in ("source", "batches", "plates", "treated", "controls")))
    console.print(table)
    table = Table(title="treated images per class")
    table.add_column("class")
    table.add_column("images", justify="right")
    for name, n in s["per_class"].items():
        table.add_row(name, str(n))
    console.print(table)
    table = Table(title="per plate")
    for col in ("source", "batch", "plate", "n_treated", "n_controls"):
        table.add_column(col)
    for row in s["per_plate"]:
        table.add_row(*(str(row[c]) for c in ("source", "batch", "plate", "n_treated", "n_controls")))
    console.print(table)


@data_app.command("calibrate")
@handle_errors
def calibrate(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name or path to a prepared dataset folder "
                                         "(default: the synthetic simulator, default size, severity 1).")]
    = "synthetic",
    quick: Annotated[bool, typer.Option("--quick", help="Seed 0 and fold 0 of each split only; the methods keep "
                                        "their full settings (default: 3 seeds, all folds).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the panel as JSON on stdout.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the markdown table for the data card "
                                           "instead of the terminal table.")] = False,
    results: Annotated[Path | None, typer.Option("--results", help="Folder of the run records, reused when there "
                                                 "(default: <cache>/calibration); leaderboard/results reuses the "
                                                 "committed records.")] = None,
    probe: Annotated[list[str] | None, typer.Option("--probe", help="Run only this probe (repeatable); an unknown "
                                                    "name lists the valid ones.")] = None,
    device: Annotated[str, typer.Option(help="auto (GPU if visible), cpu or cuda.")] = "auto",
    smoke: Annotated[bool, typer.Option("--smoke", help="The methods' --quick settings (1 epoch): a smoke test "
                                        "of the panel itself; the numbers mean nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")] = False,
) -> None:
    """Run the probe panel on a dataset and print probe x measured x target x pass.

    Accuracy probes come from ordinary run records (as `bench run` writes them, reused when there);
    the label-shift probe fits ERM, ARM-BN and BEN in this process; the lab probe also generates the
    dataset's severity-0 twin. Rerun the same command to resume.
    """
    from ..calibration.probes import select_probes
    from ..protocol.loop import resolve_device

    if as_json and markdown:
        raise BenchError("--json and --markdown each choose the output; give one of them")
    select_probes(probe)  # unknown names fail before any work
    resolve_device(device)
    from ..calibration.settings import PanelSettings
    from ..calibration.panel import panel_json, run_panel
    from ..calibration.writeup import markdown_table, print_table

    data = _open(dataset, progress=not as_json)
    settings = PanelSettings(quick=quick, smoke=smoke, device=device, results_dir=results)
    log = None if quiet else (lambda line: typer.echo(line, err=True))
    result = run_panel(data, settings, probe, log=log, progress=not (as_json or quiet))
    if as_json:
        typer.echo(json.dumps(panel_json(result), indent=1, allow_nan=False))
    elif markdown:
        typer.echo(markdown_table(result))
    else:
        print_table(result)
    errors = [r for r in result.rows if r.error]
    if errors and not as_json:
        typer.echo(f"{len(errors)} of {len(result.rows)} probes could not be measured (first: {errors[0].probe.name}: "
                   f"{errors[0].error}); fix that and rerun, finished runs are reused", err=True)


def attach(app: typer.Typer) -> None:
    try:
        from .prepare import attach_prepare
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.prepare":
            raise
    else:
        attach_prepare(data_app)
    app.add_typer(data_app, name="data")
