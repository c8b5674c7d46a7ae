"""``bench methods``: list and check methods, write a new method's skeleton, regenerate the shipped encoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors

methods_app = typer.Typer(help="Batch-correction methods: list, check, new, regenerate the shipped encoder.",
                          no_args_is_help=True)


@methods_app.command("list")
@handle_errors
def list_methods(
    describe: Annotated[bool, typer.Option("--describe", help="Also ask a sandboxed worker for each plugin's access "
                                           "level and description (imports each plugin there, a few seconds each)."
                                           )] = False,
) -> None:
    """Show every method: access level, origin (platebench or the plugin package), description.

    Plugins are listed from their package's metadata without running any of their code: access
    ``?`` and their package's summary, unless --describe asks a sandboxed worker for what they declare.
    """
    from ..errors import BenchError
    from ..method_info import method_info
    from ..registry import available_methods, method_entries, plugin_problems

    classes = available_methods()
    rows, warnings = [], []
    for name, entry in method_entries().items():
        if not entry.plugin:
            cls = classes[name]
            rows.append((name, str(cls.access), entry.origin, cls.description))
            continue
        access, text = "?", entry.summary or f"(plugin {entry.target})"
        if describe:
            try:
                info = method_info(name)
                access, text = str(info.access), info.description
            except BenchError as exc:
                warnings.append(f"plugin method '{name}' ({entry.origin}) could not be described: {exc}")
        rows.append((name, access, entry.origin, text))
    widths = [max([len(r[i]) for r in rows] + [6]) for i in range(3)]
    typer.echo(f"{'method':<{widths[0]}}  {'access':<{widths[1]}}  {'origin':<{widths[2]}}  description")
    for name, access, origin, text in rows:
        typer.echo(f"{name:<{widths[0]}}  {access:<{widths[1]}}  {origin:<{widths[2]}}  {text}")
    if not describe and any(r[1] == "?" for r in rows):
        typer.echo("access ?: a plugin, listed from its package metadata without running its code; "
                   "`bench methods list --describe` asks a sandboxed worker what it declares")
    for line in [*(f"{p}" for p in plugin_problems()), *warnings]:
        typer.echo(f"warning: {line}", err=True)


@methods_app.command("check")
@handle_errors
def check(
    name: Annotated[str, typer.Argument(help="Registered method name (see `bench methods list`).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value "
                                                   "(repeatable), applied after the quick settings.")] = None,
) -> None:
    """Run the conformance checks on NAME (a tiny synthetic fold, well under 2 minutes); exit 1 if any fails.

    A plugin's in-process checks run in a sandboxed process (its code never runs in this one); the
    ``sealed`` check runs it in a sealed worker, as ``bench run`` does.
    """
    from ..conformance.checks import CHECK_DATASET, CheckResult, check_data, iter_checks
    from ..method_info import method_info
    from ..protocol.loop import parse_overrides

    overrides = parse_overrides(set_ or [])
    info = method_info(name, overrides, quick=True)  # unknown names and bad overrides fail here
    typer.echo(f"checking '{name}' (access {info.access}, from {info.origin}) on the check fold of "
               f"synthetic {', '.join(f'{k}={v}' for k, v in CHECK_DATASET.items())}")
    start = time.perf_counter()
    data = check_data()
    results: list[CheckResult] = []
    marks = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    for result in iter_checks(name, data, overrides=overrides, info=info):
        results.append(result)
        typer.echo(f"  {marks[result.status]}  {result.check:<24} {result.message}")
    counts = {s: sum(r.status == s for r in results) for s in marks}
    typer.echo(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
               f"in {time.perf_counter() - start:.0f} s")
    if counts["failed"]:
        typer.echo(f"error: '{name}' fails {counts['failed']} conformance check(s); fix what the FAIL lines say "
                   f"and rerun `bench methods check {name}`", err=True)
        raise typer.Exit(1)


def _builtin_methods_dir() -> Path:
    """The folder of the built-in methods: ``methods/`` of the checkout (installed as ``benchmark.methods``)."""
    from .. import methods

    return Path(methods.__file__).resolve().parent


@methods_app.command("new")
@handle_errors
def new(
    name: Annotated[str, typer.Argument(help="Name of the new method (lower case, e.g. my_method).")],
    directory: Annotated[Path, typer.Option("--dir", help="Folder to write the files into: `methods` (the "
                                            "checkout's methods/ folder) for a method built into platebench, its "
                                            "test then goes to tests/; or a folder of its own with --plugin, e.g. "
                                            "../my_method.")] = Path("."),
    plugin: Annotated[bool, typer.Option("--plugin", help="Also write a pyproject.toml declaring the "
                                         "platebench.methods entry point (a separately installed package).")]
    = False,
) -> None:
    """Write a skeleton method file NAME.py (config + the three calls to fill in) and its test."""
    from ..errors import BenchError
    from ..templates import write_skeleton

    builtin = directory.resolve() == _builtin_methods_dir()
    if builtin and plugin:
        raise BenchError(f"--plugin writes a separate package, not into the built-in methods folder {directory}; "
                         "drop --plugin, or give a folder of its own (e.g. --dir ../my_method --plugin)")
    # Every public module in methods/ is loaded as a method, so a built-in method's test goes to tests/.
    tests = _builtin_methods_dir().parent / "tests" if builtin else None
    for path in write_skeleton(name, directory, plugin, test_directory=tests):
        typer.echo(f"wrote {path}")
    typer.echo(f"next: fill in fit, adapt and predict in {directory / (name + '.py')}, then run "
               f"`bench methods check {name}` (see CONTRIBUTING.md)")


@methods_app.command("pretrain-encoder")
@handle_errors
def pretrain_encoder(
    out: Annotated[Path, typer.Option(help="Where to write the weights (.safetensors; the JSON config goes "
                                           "next to it). The shipped file is methods/weights/"
                                           "platebench_ssl.safetensors.")],
    n_images: Annotated[int, typer.Option(help="Pretraining images from the simulator's other labs and "
                                               "perturbations.")] = 4096,
    epochs: Annotated[int, typer.Option(help="Passes over the pretraining images.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the images and of the training.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the pretraining images in px.")] = 64,
) -> None:
    """Pretrain the `platebench-ssl` encoder from scratch, without labels (SimCLR), and save it."""
    from ..core.encoders.simclr import SSLSettings, pretrain_encoder as pretrain
    from ..core.encoders.ssl import save_encoder
    from ..core.training.loop import stderr_progress
    from ..datasets.synthetic import SIMULATOR_VERSION, pretraining_images
    from ..datasets.synthetic.pretrain import N_LABS, UNPERTURBED
    from ..errors import BenchError
    from ..records import code_version

    if out.suffix != ".safetensors":
        raise BenchError(f"--out {out} must end in .safetensors (the JSON config is written next to it)")
    start = time.perf_counter()
    typer.echo(f"generating {n_images} pretraining images ({image_size} px, seed {seed})...", err=True)
    images = pretraining_images(n_images, seed, image_size=image_size)
    generated = time.perf_counter() - start
    backbone, config = pretrain(images, SSLSettings(epochs=epochs), seed, stderr_progress("pretrain"))
    config["image_generation_seconds"] = round(generated, 1)
    config["pretraining_data"] = (
        f"benchmark.datasets.synthetic.pretraining_images({n_images}, seed={seed}, image_size={image_size}) of "
        f"simulator {SIMULATOR_VERSION}: {N_LABS} labs drawn from a random stream no benchmark source uses, "
        f"random phenotype mixtures that are not the benchmark compounds, {UNPERTURBED:.0%} unperturbed")
    config["code"] = code_version()
    weights, meta = save_encoder(out, backbone, config)
    typer.echo(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {meta} "
               f"in {time.perf_counter() - start:.0f} s")


def attach(app: typer.Typer) -> None:
    """Add the ``methods`` sub-app to the root ``bench`` app."""
    app.add_typer(methods_app, name="methods")
