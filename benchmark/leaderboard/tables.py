"""Tables of the leaderboard, each built from a list of ok records of one dataset version.

Pure functions: records in, markdown lines out (see :mod:`benchmark.leaderboard.build`).
"""

from __future__ import annotations

import json
import shlex
from collections import defaultdict

import numpy as np

from ..methods.base import AccessLevel
from ..metrics import BOOTSTRAP_REPLICATES, bootstrap_ci, mean_std
from ..records import DEFAULT_RESULTS, QUICK, Record
from .config_versions import same_budget

DEFAULT_OUT = "leaderboard/LEADERBOARD.md"
ACCESS_ORDER = {str(level): rank for rank, level in enumerate(AccessLevel)}
"""Rows are grouped by access level, from seeing nothing of the target to seeing it during fit."""
BASELINE = "erm"
SPLIT_LABELS = {"batch_out": "leave-batch-out", "source_out": "leave-source-out"}
CI_NOTE = (
    f"95% CIs are two-stage bootstrap intervals ({BOOTSTRAP_REPLICATES:,} replicates, seed 0) that resample the "
    "units that vary: each replicate draws the folds (held-out sources or batches) with replacement, then the "
    "seeds within each drawn fold, so k folds give the width of k observations however many seeds each has; "
    "a single fold gives no CI (`no CI: 1 fold`).")
"""What the leaderboard says its confidence intervals resample."""


def _fmt(mean: float, std: float) -> str:
    return "–" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _ood(r: Record) -> float:
    return _num(r.data["metrics"]["out_of_domain"].get("accuracy"))


def _ind(r: Record) -> float:
    return _num(r.data["metrics"]["in_domain"].get("accuracy"))


def _num(v: object) -> float:
    return float("nan") if v is None else float(v)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if not np.isnan(v)]


def method_order(records: list[Record], baseline: str = BASELINE) -> list[str]:
    """Methods of the records: by access level (none, controls, unlabeled, transductive), the baseline first, then by name."""
    access = {r.method: r.data["method"]["access"] for r in records}
    return sorted(access, key=lambda m: (ACCESS_ORDER.get(access[m], 9), m != baseline, m))


def _by_fold(runs: list[tuple[int, float]]) -> dict[int, list[float]]:
    """The finite values of ``(fold, value)`` runs grouped by fold, the unit the CIs resample."""
    grouped: dict[int, list[float]] = defaultdict(list)
    for fold, value in runs:
        if not np.isnan(value):
            grouped[fold].append(value)
    return dict(grouped)


def _ci_text(lo: float, hi: float, signed: bool = False) -> str:
    """``[low, high]``, or ``[no CI: 1 fold]`` where the bootstrap gave none."""
    if np.isnan(lo):
        return "[no CI: 1 fold]"
    fmt = "+.3f" if signed else ".3f"
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def paired_difference(records: list[Record], method: str, split: str,
                      baseline: str = BASELINE) -> tuple[float, float, float, int, int]:
    """Mean out-of-domain accuracy difference ``method - baseline`` over shared (fold, seed) runs trained to the
    same budget (:func:`~benchmark.leaderboard.config_versions.same_budget`).

    Returns ``(mean, ci_low, ci_high, n_pairs, n_folds)``: the 95% CI is the two-stage bootstrap
    of :func:`~benchmark.metrics.bootstrap_ci` on the differences (folds, then seeds within them);
    ``nan`` bounds with fewer than two folds.
    """
    runs = {(r.method, r.fold, r.seed): r for r in records if r.split == split}
    diffs = _by_fold([(f, _ood(r) - _ood(runs[(baseline, f, s)])) for (m, f, s), r in runs.items()
                      if m == method and (baseline, f, s) in runs and same_budget(r, runs[(baseline, f, s)])])
    values = [d for fold in diffs.values() for d in fold]
    if not values:
        return float("nan"), float("nan"), float("nan"), 0, 0
    lo, hi = bootstrap_ci(diffs)
    return float(np.mean(values)), lo, hi, len(values), len(diffs)


def _delta_cell(mean: float, lo: float, hi: float, n: int, n_folds: int) -> str:
    return f"{mean:+.3f} {_ci_text(lo, hi, signed=True)} (n={n}, {n_folds} fold{'s' if n_folds > 1 else ''})"


def main_table(records: list[Record], baseline: str) -> list[str]:
    """The main table: a row per method with accuracies per setting, gap, Δ to the baseline, runs."""
    header = ["method", "access", "in-domain", "leave-batch-out", "leave-source-out",
              "gap in-domain − source-out", f"Δ vs `{baseline}` batch-out [95% CI]",
              f"Δ vs `{baseline}` source-out [95% CI]", "runs (batch + source)", "data version"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in method_order(records, baseline):
        rs = [r for r in records if r.method == method]
        cells = [f"`{method}`", rs[0].data["method"]["access"], _fmt(*mean_std(_finite([_ind(r) for r in rs])))]
        for split in ("batch_out", "source_out"):
            cells.append(_fmt(*mean_std(_finite([_ood(r) for r in rs if r.split == split]))))
        so = [r for r in rs if r.split == "source_out"]
        gap = _finite([_ind(r) - _ood(r) for r in so])
        cells.append(f"{np.mean(gap):+.3f}" if gap else "–")
        for split in ("batch_out", "source_out"):
            diff = paired_difference(records, method, split, baseline)
            cells.append("–" if method == baseline or diff[3] == 0 else _delta_cell(*diff))
        counts = {s: sum(r.split == s for r in rs) for s in ("batch_out", "source_out")}
        cells.append(f"{len(rs)} ({counts['batch_out']} + {counts['source_out']})")
        cells.append(", ".join(sorted({str(r.data["dataset"]["version"]) for r in rs})))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_source_table(records: list[Record]) -> list[str]:
    """Leave-source-out accuracy per held-out source (mean ± std over seeds); empty without source_out runs.

    A cell is one fold, so it has no CI (:data:`CI_NOTE`): its seeds share the held-out source.
    """
    so = [r for r in records if r.split == "source_out"]
    if not so:
        return []
    sources = sorted({src for r in so for src in r.data["split"]["held_out"]})
    lines = ["| method | " + " | ".join(f"held-out {s}" for s in sources) + " |",
             "|" + "---|" * (len(sources) + 1)]
    for method in method_order(so):
        cells = [f"`{method}`"]
        for src in sources:
            vals = _finite([_ood(r) for r in so if r.method == method and src in r.data["split"]["held_out"]])
            cells.append(_fmt(*mean_std(vals)) if vals else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def details_table(records: list[Record]) -> list[str]:
    """All metrics per method, split and part, with the fold-level bootstrap 95% CI of the accuracy."""
    cols = ["accuracy", "balanced_accuracy", "macro_f1", "worst_plate_accuracy", "ece"]
    lines = ["| method | setting | runs | accuracy | 95% CI | balanced acc. | macro-F1 | worst plate | ECE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in method_order(records):
        for split in ("batch_out", "source_out"):
            rs = [r for r in records if r.method == method and r.split == split]
            for part, label in (("out_of_domain", SPLIT_LABELS[split]), ("in_domain", f"in-domain ({split})")):
                if not rs:
                    continue
                values = {c: _finite([_num(r.data["metrics"][part].get(c)) for r in rs]) for c in cols}
                folds = _by_fold([(r.fold, _num(r.data["metrics"][part].get("accuracy"))) for r in rs])
                ci = _ci_text(*bootstrap_ci(folds)) if folds else "–"
                cells = [f"`{method}`", label, str(len(rs)), _fmt(*mean_std(values["accuracy"])), ci,
                         *[_fmt(*mean_std(values[c])) for c in cols[1:]]]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def configs(records: list[Record]) -> list[str]:
    """One line per method (and distinct config) listing its hyper-parameters."""
    by_method: dict[str, set[str]] = defaultdict(set)
    for r in records:
        cfg = r.data["method"]["config"]
        by_method[r.method].add(", ".join(f"{k}={v}" for k, v in cfg.items()) or "(no hyper-parameters)")
    lines = []
    for method in method_order(records):
        for cfg in sorted(by_method[method]):
            lines.append(f"- `{method}`: {cfg}")
    return lines


def provenance(records: list[Record]) -> list[str]:
    """One line per method: the code (platebench version, git commit) and torch that produced its records.

    Runs made from a checkout whose package source differed from its commit are counted:
    their commit alone does not reproduce them.
    """
    by_method: dict[str, dict[tuple[str, str, str], list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:  # method -> (version, commit, torch) -> the runs' source states
        env = r.data.get("environment") or {}
        commit = str(env.get("git_commit", "unknown"))
        commit = commit[:12] if len(commit) == 40 else commit
        key = (str(env.get("platebench", "?")), commit, str(env.get("torch", "?")))
        by_method[r.method][key].append(str(env.get("git_tree", "unknown")))
    lines = []
    for method in method_order(records):
        parts = []
        for (version, commit, torch_version), runs in sorted(by_method[method].items()):
            modified = runs.count("modified")
            note = f"; {modified} from uncommitted source changes" if modified else ""
            parts.append(f"platebench {version} at commit `{commit}`, torch {torch_version} ({len(runs)} runs{note})")
        lines.append(f"- `{method}`: " + "; ".join(parts))
    return lines


REPRODUCIBILITY = (
    "Reruns are exact on the same hardware and thread settings: the commands below reproduce every record "
    "bit for bit on a machine with the same CPU model, instruction sets, torch build and thread counts. On "
    "other hardware torch picks other kernels (AVX2, AVX-512, AMX, another BLAS) and single runs differ, so "
    "reruns there are statistical: the means agree within their 95% CIs. Each record names its CPU, "
    "instruction-set flags, torch threads and BLAS / oneDNN build (`environment` in its JSON).")
"""What the leaderboard says about reproducing its numbers (also in docs/protocol.md)."""


def _cpu_of(record: Record) -> str:
    """``model (torch kernels CAPABILITY)`` of a record, or ``CPU not recorded`` for records older than the field."""
    env = record.data.get("environment") or {}
    cpu = env.get("cpu") or {}
    if not cpu.get("model"):
        return "CPU not recorded"
    capability = (env.get("torch_build") or {}).get("cpu_capability")
    return f"{cpu['model']}" + (f" (torch kernels {capability})" if capability else "")


def hardware(records: list[Record]) -> list[str]:
    """The reproducibility statement, then one line per method: the CPU models its records ran on."""
    by_method: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        by_method[r.method][_cpu_of(r)] += 1
    lines = [REPRODUCIBILITY, ""]
    for method in method_order(records):
        cpus = by_method[method]
        lines.append(f"- `{method}`: " + "; ".join(f"{cpu} ({n} runs)" for cpu, n in sorted(cpus.items())))
    return lines


def commands(records: list[Record], results_dir: str, out_md: str, baseline: str) -> list[str]:
    """The ``bench run`` commands (one per method, split and settings) and the ``bench leaderboard`` command."""
    runs: dict[tuple, set[tuple[int, int]]] = defaultdict(set)
    n_folds: dict[tuple, int] = {}
    for r in records:
        sp = r.data["split"]
        key = (r.method, r.split, r.data["dataset"].get("argument", r.dataset), sp.get("split_seed", 0),
               tuple(sorted((r.data["method"].get("overrides") or {}).items())), r.profile)
        runs[key].add((r.fold, r.seed))
        n_folds[key] = int(sp.get("n_folds", 0))
    lines = []
    order = method_order(records, baseline)
    for key in sorted(runs, key=lambda k: (order.index(k[0]), k[1:])):
        method, split, dataset, split_seed, overrides, profile = key
        folds = sorted({f for f, _ in runs[key]})
        seeds = sorted({s for _, s in runs[key]})
        cmd = ["bench", "run", "--method", method, "--split", split, "--dataset", dataset,
               "--seeds", ",".join(map(str, seeds))]
        if folds != list(range(n_folds[key])):
            cmd += ["--folds", ",".join(map(str, folds))]
        if split_seed:
            cmd += ["--split-seed", str(split_seed)]
        if profile == QUICK:
            cmd += ["--quick"]
        for k, v in overrides:
            cmd += ["--set", f"{k}={v}"]
        if results_dir != str(DEFAULT_RESULTS):
            cmd += ["--results", results_dir]
        lines.append(shlex.join(cmd))
    board = ["bench", "leaderboard"]
    if results_dir != str(DEFAULT_RESULTS):
        board += ["--results", results_dir]
    if out_md != str(DEFAULT_OUT):
        board += ["--out", out_md]
    if any(r.profile == QUICK for r in records):
        board += ["--include-quick"]
    if baseline != BASELINE:
        board += ["--baseline", baseline]
    return ["```sh", *lines, shlex.join(board), "```"]


def _model_settings(record: Record) -> dict[str, object]:
    keys = ("backbone", "arch", "model", "encoder", "image_size", "crop", "width", "depth")
    settings = {k: v for k, v in record.data["method"]["config"].items() if any(w in k for w in keys)}
    digest = (record.data.get("fit_report") or {}).get("encoder_weights_sha256")
    if digest:
        settings["encoder_sha256"] = f"{digest[:12]}…"
    return settings


def model_line(records: list[Record]) -> str:
    """Model and input settings per method, taken from the records' configs (and the frozen encoder's weights)."""
    parts = []
    for method in method_order(records):
        cfgs = {json.dumps(_model_settings(r), sort_keys=True, ensure_ascii=False)
                for r in records if r.method == method}
        for cfg in sorted(cfgs):
            items = json.loads(cfg)
            if items:
                parts.append(f"`{method}`: " + ", ".join(f"{k}={v}" for k, v in items.items()))
    return "Model / input (from the records' configs): " + ("; ".join(parts) if parts else "–") + "."
