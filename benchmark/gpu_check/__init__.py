"""GPU checks of the CUDA path (issue 15, item 3): one unattended run that measures it and writes a markdown report.

``python -m benchmark.gpu_check [REPORT] [--cpu-smoke]`` (or ``scripts/gpu_check.sh``) runs, each stage in its own
process with its own time box, so that a crash, a hang or an out-of-memory error fails only that stage:

1. ``loader`` — the packed store (memory-mapped shards) against one 5-channel TIFF per site at 256 px: images/s
   read and decoded, in this process and through a DataLoader with worker processes, from a cold page cache
   (evicted with ``posix_fadvise``) and a warm one;
2. ``resnet50`` — ResNet-50 training steps (Adam, cross-entropy, ``loss.item()`` every step as in
   :func:`benchmark.core.training.loop.train_model`) at 256 px, batch 64, bf16 autocast + channels-last, with cuDNN
   deterministic (the project's setting) and with ``cudnn.benchmark``, and float32 for comparison;
3. ``data_wait`` — the share of each training step spent waiting for data with the real loader
   (:func:`benchmark.core.training.loader.epochs`, :func:`~benchmark.core.training.loop.train_model`) on a packed store of
   512 px images cropped to 256 px, as a prepared JUMP store holds them;
4. ``paper`` — ``bench run --preset paper --set max_epochs=2`` of ERM, CS-ARM-BN, BEN and ARM-BN on fold 0 of a small
   simulated dataset of 256 px images (``synth``, generated at the start, in parallel with stages 1-3);
5. peak GPU memory of every stage (torch's allocator in-process, the card's use from ``nvidia-smi`` for all).

The report (GPU name, torch / CUDA / cuDNN versions, every measurement with its settings, every failure) is
rewritten after each stage, so a run killed late still leaves one. ``--cpu-smoke`` runs the same stages on the CPU at
tiny sizes (about half a minute; with ``--in-process``, all in one process, seconds plus the ``bench run`` of stage 4),
for tests; nothing is downloaded and nothing asks a question. On a CUDA machine the whole run keeps to
:data:`DEFAULT_BUDGET_S`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from . import processes
from .memory import CardMemory
from .summary import render_report
from .sizes import MODES, Sizes
from .stages import ORDER, STAGES, StageResult

__all__ = ["DEFAULT_BUDGET_S", "DEFAULT_REPORT", "MODES", "ORDER", "STAGES", "Sizes", "StageResult", "main",
           "render_report", "run_checks"]

DEFAULT_REPORT = Path("docs") / "gpu_report.md"
DEFAULT_BUDGET_S = 540.0
"""The whole run's time budget: under the 10 minutes a CUDA machine is lent for it."""
RESERVE_S = 10.0
"""Kept back from the budget to write the report after the last stage."""


def run_checks(report: Path, mode: str = "gpu", budget_s: float = DEFAULT_BUDGET_S, workdir: Path | None = None,
               keep_workdir: bool = False, extra_reports: Sequence[Path] = (), only: Sequence[str] | None = None,
               in_process: bool = False, log: Callable[[str], None] = print) -> dict[str, StageResult]:
    """Run the stages within ``budget_s``; write the report (after each stage) to ``report`` and ``extra_reports``.

    Parameters
    ----------
    report, extra_reports
        Markdown files to write (the same text).
    mode
        ``gpu`` (CUDA, the real sizes) or ``smoke`` (CPU, tiny sizes).
    budget_s
        Time budget of the whole run; each stage gets the smaller of its own box and what is left.
    workdir, keep_workdir
        Parent folder of the temporary work folder (data written by the stages), and whether to keep it.
    only
        Run only these stages (``env`` always runs; ``paper`` brings ``synth``); default all.
    in_process
        Run the stages in this process, one after the other (``smoke`` only: no isolation, no time boxes).
    """
    sizes = MODES[mode]
    if in_process and sizes.device != "cpu":
        raise ValueError("in_process runs only the CPU smoke test; a GPU run isolates every stage in a process")
    unknown = sorted(set(only or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; valid: {', '.join(ORDER)}")
    wanted = [s for s in ORDER if only is None or s == "env" or s in only or (s == "synth" and "paper" in only)]
    start = time.perf_counter()
    deadline = start + budget_s
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="platebench-gpu-check-", dir=workdir))
    stages: dict[str, StageResult] = {}
    background: tuple[subprocess.Popen, Path, float] | None = None

    def write(finished: bool = False) -> None:
        text = render_report(stages, mode, started, time.perf_counter() - start, finished, not in_process)
        for path in (report, *extra_reports):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def say(stage: StageResult) -> None:
        log(f"gpu_check: {stage.name} {stage.status} in {stage.seconds:.0f} s"
            + (f": {stage.error}" if stage.error else ""))

    def run(name: str, dataset_root: str | None = None) -> StageResult:
        stage = stages[name] = StageResult(name)
        timeout = min(sizes.boxes[name], deadline - time.perf_counter() - RESERVE_S)
        if timeout < 5:
            stage.status, stage.error = "skipped", "the run's time budget was spent"
        else:
            log(f"gpu_check: {name} (time box {timeout:.0f} s)")
            t0 = time.perf_counter()
            with CardMemory() as card:
                if in_process:
                    processes.run_in_process(stage, sizes, work, timeout, dataset_root)
                else:
                    processes.finish(stage, *processes.start(name, mode, work, timeout, dataset_root), timeout, t0)
            stage.card_peak_mib = card.value
            say(stage)
        write()
        return stage

    try:
        env = run("env")
        if sizes.device == "cuda" and not env.result.get("cuda"):
            for name in wanted[1:]:
                stages[name] = StageResult(name, "skipped", error="torch sees no CUDA GPU here; run with "
                                                                  "--cpu-smoke to check the script on the CPU")
            return stages
        if "synth" in wanted and not in_process:  # CPU only: alongside the GPU stages
            stages["synth"] = StageResult("synth", "running")
            background = (*processes.start("synth", mode, work, sizes.boxes["synth"]), time.perf_counter())
        for name in wanted[1:]:
            if name == "synth" and background is not None:
                proc, result, t_synth = background
                left = min(sizes.boxes["synth"] - (time.perf_counter() - t_synth),
                           deadline - time.perf_counter() - RESERVE_S)
                processes.finish(stages["synth"], proc, result, left, t_synth)
                background = None
                say(stages["synth"])
            elif name == "paper" and stages["synth"].status != "ok":
                stages["paper"] = StageResult("paper", "skipped",
                                              error=f"needs the simulated dataset (synth {stages['synth'].status})")
            elif name != "synth" or in_process:
                run(name, stages["synth"].result.get("root") if name == "paper" else None)
    finally:
        if background is not None:  # interrupted while synth ran: stop it
            processes.kill(background[0])
            stages["synth"].status = "interrupted"
        write(finished=True)
        if not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    return stages


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the whole check (parent), or one ``--stage`` (child)."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, help=f"markdown report to write (default {DEFAULT_REPORT}; "
                        "with --cpu-smoke: gpu_report_smoke.md in the temp folder); also $OUT/gpu_report.md "
                        "when $OUT is set")
    parser.add_argument("--cpu-smoke", action="store_true", help="run every stage on the CPU at tiny sizes")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="time budget of the whole run in s")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary work folder (default: $TMPDIR)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the work folder (data, stage results)")
    parser.add_argument("--only", help=f"comma-separated stages to run (env always runs): {', '.join(ORDER[1:])}")
    parser.add_argument("--in-process", action="store_true", help="with --cpu-smoke: run the stages in this process "
                        "(fast; no isolation, no time boxes)")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(MODES), default="gpu", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-root", help=argparse.SUPPRESS)
    parser.add_argument("--time-box", type=float, default=300.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return processes.run_child(args.stage, args.mode, Path(args.workdir), Path(args.result), args.dataset_root,
                                   args.time_box)
    mode = "smoke" if args.cpu_smoke else "gpu"
    report = args.report or (Path(tempfile.gettempdir()) / "gpu_report_smoke.md" if mode == "smoke"
                             else DEFAULT_REPORT)
    extra = [Path(os.environ["OUT"]) / "gpu_report.md"] if os.environ.get("OUT") else []
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    if args.in_process and mode != "smoke":
        parser.error("--in-process needs --cpu-smoke: a GPU run isolates every stage in its own process")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if only is not None and (bad := sorted(set(only) - set(STAGES))):
        parser.error(f"unknown stage(s) {', '.join(bad)}; valid: {', '.join(ORDER[1:])}")
    stages = run_checks(report, mode, args.budget, args.workdir, args.keep_workdir, extra, only, args.in_process)
    failed = [s.name for s in stages.values() if s.status != "ok"]
    print(f"gpu_check: wrote {report}" + "".join(f" and {p}" for p in extra)
          + (f"; {len(failed)} stage(s) did not finish: {', '.join(failed)}" if failed else "; every stage finished"))
    return 1 if failed else 0


