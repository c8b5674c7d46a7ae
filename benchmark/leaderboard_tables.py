"""Tables of the leaderboard, each built from a list of ok records of one dataset version.

Pure functions: records in, markdown lines out (see :mod:`benchmark.leaderboard`).
"""

from __future__ import annotations

import json
import shlex
from collections import defaultdict

import numpy as np

from .methods.base import AccessLevel
from .metrics import bootstrap_ci, mean_std
from .records import DEFAULT_RESULTS, QUICK, Record

DEFAULT_OUT = "leaderboard/LEADERBOARD.md"
ACCESS_ORDER = {str(level): rank for rank, level in enumerate(AccessLevel)}
"""Rows are grouped by access level, from seeing nothing of the target to seeing it during fit."""
BASELINE = "erm"
SPLIT_LABELS = {"batch_out": "leave-batch-out", "source_out": "leave-source-out"}


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


def paired_difference(records: list[Record], method: str, split: str,
                      baseline: str = BASELINE) -> tuple[float, float, float, int]:
    """Mean out-of-domain accuracy difference ``method - baseline`` over shared (fold, seed) runs.

    Returns ``(mean, ci_low, ci_high, n_pairs)`` with a seeded bootstrap 95% CI.
    """
    runs = {(r.method, r.fold, r.seed): _ood(r) for r in records if r.split == split}
    diffs = [acc - runs[(baseline, f, s)] for (m, f, s), acc in runs.items()
             if m == method and (baseline, f, s) in runs]
    diffs = _finite(diffs)
    if not diffs:
        return float("nan"), float("nan"), float("nan"), 0
    lo, hi = bootstrap_ci(diffs)
    return float(np.mean(diffs)), lo, hi, len(diffs)


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
            mean, lo, hi, n = paired_difference(records, method, split, baseline)
            cells.append("–" if method == baseline or n == 0 else f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={n})")
        counts = {s: sum(r.split == s for r in rs) for s in ("batch_out", "source_out")}
        cells.append(f"{len(rs)} ({counts['batch_out']} + {counts['source_out']})")
        cells.append(", ".join(sorted({str(r.data["dataset"]["version"]) for r in rs})))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_source_table(records: list[Record]) -> list[str]:
    """Leave-source-out accuracy per held-out source (mean ± std over seeds); empty without source_out runs."""
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
    """All metrics per method, split and part, with a bootstrap 95% CI of the accuracy."""
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
                lo, hi = bootstrap_ci(values["accuracy"])
                ci = f"[{lo:.3f}, {hi:.3f}]" if values["accuracy"] else "–"
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
"""What the leaderboard says about reproducing its numbers (also in README.md)."""


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
