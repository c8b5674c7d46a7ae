"""Turn a pytest-benchmark JSON of ``tests/benchmarks`` into the tables of ``docs/performance.md``.

Usage::

    .venv/bin/pytest tests/benchmarks --benchmark-only --benchmark-json=perf.json
    .venv/bin/python scripts/perf_report.py perf.json [--doc docs/performance.md]

The generated part sits between ``<!-- perf:begin -->`` and ``<!-- perf:end -->``;
the rest of the document (notes, scaling section) is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"
LOADER_TARGET, WAIT_TARGET, ADAPT_TARGET = 10.0, 0.05, 1.0


def _ok(holds: bool) -> str:
    return "yes" if holds else "**no**"


def _rate(bench: dict) -> float:
    """Images per second from the median time of one round."""
    return bench["extra_info"]["n_images"] / bench["stats"]["median"]


def machine_lines(data: dict) -> list[str]:
    info = data.get("machine_info", {})
    pb = info.get("platebench", {})
    commit = data.get("commit_info", {}).get("id", "?")
    return [f"- CPU: {pb.get('cpu_model', info.get('cpu', {}).get('brand_raw', '?'))}, "
            f"{pb.get('cpu_cores', '?')} cores; GPU: {pb.get('cuda') or 'none'}",
            f"- Python {info.get('python_version', '?')}, torch {pb.get('torch', '?')} "
            f"(default threads {pb.get('torch_threads_default', '?')})",
            f"- load average at start: {pb.get('load_average_at_start', '?')} "
            "(a shared machine: other jobs ran at the same time, so absolute numbers are noisy; "
            "every ratio compares variants measured in the same run)",
            f"- run at {data.get('datetime', '?')}, commit {str(commit)[:10]}"]


def loader_table(benches: list[dict]) -> list[str]:
    rows = ["| image side | crop | output | packed store (img/s) | deflate TIFF per site (img/s) | ratio | ≥ 10× |",
            "|---|---|---|---|---|---|---|"]
    by_case: dict[tuple, dict[str, dict]] = {}
    for b in benches:
        e = b["extra_info"]
        by_case.setdefault((e["side"], e.get("output", "float32")), {})[e["source"]] = b
    for (side, output), pair in sorted(by_case.items()):
        if {"packed_store", "tiff_per_site"} <= set(pair):
            fast, slow = _rate(pair["packed_store"]), _rate(pair["tiff_per_site"])
            rows.append(f"| {side} px | {pair['packed_store']['extra_info']['crop']} px | {output} | {fast:,.0f} | "
                        f"{slow:,.0f} | {fast / slow:.1f}× | {_ok(fast / slow >= LOADER_TARGET)} |")
    return rows


def train_table(benches: list[dict]) -> list[str]:
    rows = ["| model | threads | memory format | precision | compiled | img/s | vs baseline |",
            "|---|---|---|---|---|---|---|"]
    by_name = {b["param"]: b for b in benches}
    for b in sorted(benches, key=lambda b: (b["extra_info"]["model"], -_rate(b))):
        e = b["extra_info"]
        base = by_name.get(e["baseline"])
        ratio = f"{_rate(b) / _rate(base):.2f}×" if base else "–"
        rows.append(f"| {e['model']} | {e['threads']} | {'channels-last' if e['channels_last'] else 'NCHW'} | "
                    f"{e['precision']} | {'yes' if e['compiled'] else 'no'} | {_rate(b):,.1f} | {ratio} |")
    return rows


def method_table(fits: list[dict], adapts: list[dict]) -> list[str]:
    rows = ["| method | quick fit (s) | fit img/s | share of the matmul rate | data-loader wait (share of step time) "
            "| < 5% | adapt + predict, 128 images (s) | < 1 s |", "|---|---|---|---|---|---|---|---|"]
    fit_by = {b["extra_info"]["method"]: b for b in fits}
    adapt_by = {b["extra_info"]["method"]: b for b in adapts}
    for name in sorted(set(fit_by) | set(adapt_by)):
        fit, adapt = fit_by.get(name), adapt_by.get(name)
        wait = fit["extra_info"].get("data_wait_fraction") if fit else None
        seconds = adapt["stats"]["median"] if adapt else None
        rows.append(f"| {name} | {fit['stats']['median']:.1f} | {_arithmetic(fit['extra_info'])} |" if fit
                    else f"| {name} | – | – | – |")
        rows[-1] += (f" {100 * wait:.1f}% | {_ok(wait < WAIT_TARGET)} |" if wait is not None
                     else " – (no training loop) | – |")
        rows[-1] += f" {seconds:.3f} | {_ok(seconds < ADAPT_TARGET)} |" if seconds is not None else " – | – |"
    return rows


def _arithmetic(info: dict) -> str:
    """``img/s | matmul fraction`` cells of a fit (ResNet methods), dashes otherwise."""
    if info.get("matmul_fraction") is None:
        return "– | –"
    return f"{info['images_per_second']:,.0f} | {100 * info['matmul_fraction']:.0f}%"


def render(data: dict) -> str:
    """The generated markdown block for one benchmark JSON."""
    kinds: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        kinds.setdefault(b["extra_info"].get("kind", "?"), []).append(b)
    out = [BEGIN, "", "### Machine", "", *machine_lines(data), "",
           "### Loader: packed store vs one deflate TIFF per site", "",
           "One epoch of plate-grouped batches (32 treated + 32 DMSO of one plate), random crop + flips, "
           "then float32 normalisation (CPU training path) or uint8 crops (CUDA path: loader workers hand uint8 "
           "to the GPU, which normalises); the same batches and augmentation on both sides.", "",
           *loader_table(kinds.get("loader", [])), "",
           "### Training step (forward + backward + Adam, BN in training mode)", "",
           "resnet_micro: batch 64 at 40 px (CS-ARM-BN's 32 + 32); resnet50: batch 2 at 256 px. "
           "Baseline: 1 thread, NCHW, fp32.", "",
           *train_table(kinds.get("train_step", [])), "",
           "### Methods: quick fit, data-loader wait, adapt + predict of one plate", "",
           *method_table(kinds.get("fit", []), kinds.get("adapt_predict", [])), "", END]
    return "\n".join(out)


def update_doc(doc: Path, block: str) -> None:
    """Replace the generated block of ``doc`` (or append it)."""
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--doc", type=Path, default=Path("docs/performance.md"), help="markdown file to update")
    args = parser.parse_args()
    update_doc(args.doc, render(json.loads(args.json.read_text())))
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
