"""Stages ``synth`` and ``paper``: the small simulated dataset, then ``bench run --preset paper`` of a few methods."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .sizes import Sizes


def stage_synth(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """The small simulated dataset of stage ``paper`` (generated into the platebench cache on first use)."""
    from ..datasets import load_dataset

    start = time.perf_counter()
    dataset = load_dataset("synthetic", progress=False, **sizes.synth)
    return {"root": str(dataset.root), "settings": {**sizes.synth, "images": len(dataset.index),
                                                    "fingerprint": dataset.fingerprint,
                                                    "seconds to open or generate": round(time.perf_counter() - start)}}


def _paper_row(method: str, results: Path, done: subprocess.CompletedProcess) -> dict[str, Any]:
    """What the record of one ``bench run`` says (or why there is none)."""
    from ..records import load_records

    found = load_records(results)
    if not found.ok:
        failed = found.failed[0].data.get("error") if found.failed else None
        why = failed or done.stderr.strip()[-300:] or f"exit code {done.returncode}, no record"
        return {"status": "FAILED", "error": why[:300]}
    rec = found.ok[0].data
    fit, fit_s = rec.get("fit_report") or {}, (rec.get("timings") or {}).get("fit_s")
    accuracy = ((rec.get("metrics") or {}).get("out_of_domain") or {}).get("accuracy")
    return {"status": "ok", "out-of-domain acc.": None if accuracy is None else round(accuracy, 3),
            "fit s": None if fit_s is None else round(fit_s, 1), "train images/s": fit.get("images_per_second"),
            "data-wait share": fit.get("data_wait_fraction"), "precision": fit.get("mixed_precision"),
            "loader workers": fit.get("loader_workers"),
            "worker peak RSS MB": (rec.get("worker") or {}).get("peak_rss_mb")}


def stage_paper(sizes: Sizes, work: Path, dataset_root: str | None = None, time_box: float = 300.0,
                partial: Callable[[dict[str, Any]], None] = lambda _r: None, **_: Any) -> dict[str, Any]:
    """``bench run --preset paper`` of each method on fold 0, seed 0 of the small simulated dataset, one after the
    other within ``time_box`` (the result so far goes to ``partial`` after each)."""
    if not dataset_root:
        raise RuntimeError("the simulated dataset of stage synth is missing (see that stage)")
    deadline = time.perf_counter() + time_box - 5
    out: dict[str, Any] = {"settings": {
        "command": f"bench run --method M --split source_out --preset paper --folds 0 --seeds 0 "
                   f"--device {sizes.device} " + " ".join(f"--set {p}" for p in sizes.paper_set),
        "dataset": dataset_root, "time box per run s": sizes.boxes["paper_run"]}, "table": []}
    for method in sizes.paper_methods:
        row: dict[str, Any] = {"method": method}
        timeout = min(sizes.boxes["paper_run"], deadline - time.perf_counter())
        if timeout < 20:
            row["status"] = "skipped: the stage's time box was spent"
            out["table"].append(row)
            continue
        results = work / "paper_runs" / method
        cmd = [sys.executable, "-c", "from benchmark.cli import app; app()", "run", "--method", method,
               "--split", "source_out", "--dataset", dataset_root, "--preset", "paper", "--folds", "0", "--seeds",
               "0", "--device", sizes.device, "--results", str(results), "--force", "--quiet",
               "--time-limit", str(round(timeout - 10))]
        for pair in sizes.paper_set:
            cmd += ["--set", pair]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            row.update(_paper_row(method, results, done))
        except subprocess.TimeoutExpired:
            row["status"] = "TIMED OUT"
        row["wall s"] = round(time.perf_counter() - start, 1)
        out["table"].append(row)
        partial(out)
    return out
