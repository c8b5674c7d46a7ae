"""Scaling of one ``bench run`` with the size of the synthetic dataset (plates x1, x2, x4, x8).

For each factor the simulator's ``plates_per_batch`` is multiplied (4 sources x 3
batches, 64 px, 1 site per well: 12, 24, 48, 96 plates). The dataset is generated
first (not timed); then one ``bench run --quick`` (one fold, one seed) runs in a
subprocess whose wall time, peak resident memory (``wait4`` rusage) and peak
anonymous memory (sampled from ``/proc/<pid>/status``; excludes the memory-mapped
store's file pages) are recorded. Writes ``docs/scaling.csv``, ``docs/scaling.png``
and the scaling table of ``docs/performance.md``.

Usage::

    .venv/bin/python scripts/scaling.py [--method cs_arm_bn] [--factors 1,2,4,8]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"
BASE = dict(size="tiny", sites_per_well=1, image_size=64, plates_per_batch=1)


def generate(factor: int) -> tuple[str, int, int]:
    """Generate (or find in the cache) the dataset of ``factor``; return its folder, plates and images."""
    options = {**BASE, "plates_per_batch": factor}
    code = ("from benchmark.datasets import load_dataset\n"
            f"d = load_dataset('synthetic', progress=False, **{options!r})\n"
            "print(d.root, d.index['plate'].n_unique(), len(d.index))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return out[-3], int(out[-2]), int(out[-1])


def _status_kb(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def measure(folder: str, method: str, results: Path) -> dict:
    """Wall time, peak RSS and peak anonymous RSS of one ``bench run`` on ``folder``."""
    cmd = [str(Path(sys.executable).parent / "bench"), "run", "-m", method, "-s", "source_out", "--dataset", folder,
           "--quick", "--folds", "0", "--seeds", "0", "--device", "cpu", "--results", str(results), "--force", "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, _status_kb(proc.pid, "RssAnon"))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench run failed on {folder}:\n{proc.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_anon_mb": round(peak_anon / 1024, 1)}


def linear_fit(df: pl.DataFrame) -> tuple[float, float, float]:
    """Least-squares ``wall_s = a + b * images``: intercept (s), slope (ms per image) and R²."""
    x, y = df["images"].to_numpy().astype(float), df["wall_s"].to_numpy()
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - ((y - (a + b * x)) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12)
    return float(a), float(b * 1000), float(r2)


def table(df: pl.DataFrame) -> str:
    a, b, r2 = linear_fit(df)
    rows = ["| plates | images | wall time (s) | linear fit (s) | peak RSS (MB) | peak anonymous RSS (MB) |",
            "|---|---|---|---|---|---|"]
    for r in df.iter_rows(named=True):
        rows.append(f"| {r['plates']} (x{r['factor']}) | {r['images']:,} | {r['wall_s']:.1f} | "
                    f"{a + b / 1000 * r['images']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} |")
    rows += ["", f"Linear fit: wall time = {a:.1f} s + {b:.2f} ms x images (R² = {r2:.3f}); the intercept is "
             "start-up (imports, dataset open, model set-up) and per-run fixed work."]
    return "\n".join(rows)


def plot(df: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    pdf = df.to_pandas()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    sns.lineplot(data=pdf, x="images", y="wall_s", marker="o", ax=axes[0])
    axes[0].set(xlabel="images in the dataset", ylabel="wall time of one run (s)", title="time")
    mem = pdf.melt(id_vars="images", value_vars=["peak_rss_mb", "peak_anon_mb"], var_name="memory", value_name="MB")
    mem["memory"] = mem["memory"].map({"peak_rss_mb": "peak RSS", "peak_anon_mb": "peak anonymous RSS"})
    sns.lineplot(data=mem, x="images", y="MB", hue="memory", marker="o", ax=axes[1])
    axes[1].set(xlabel="images in the dataset", ylabel="MB", title="memory", ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def update_doc(doc: Path, block: str) -> None:
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="cs_arm_bn", help="method to run (default cs_arm_bn)")
    parser.add_argument("--factors", default="1,2,4,8", help="plate multipliers")
    parser.add_argument("--from-csv", action="store_true", help="only redraw table and plot from docs/scaling.csv")
    args = parser.parse_args()
    if args.from_csv:
        df = pl.read_csv(DOCS / "scaling.csv")
    else:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for factor in [int(f) for f in args.factors.split(",")]:
                folder, plates, images = generate(factor)
                row = {"factor": factor, "plates": plates, "images": images, "method": args.method,
                       **measure(folder, args.method, Path(tmp) / "results"),
                       "load_average": round(os.getloadavg()[0], 2)}
                print(row, flush=True)
                rows.append(row)
        df = pl.DataFrame(rows)
        DOCS.mkdir(exist_ok=True)
        df.write_csv(DOCS / "scaling.csv")
    plot(df, DOCS / "scaling.png")
    block = (f"{BEGIN}\n\nOne `bench run -m {args.method} -s source_out --quick --folds 0 --seeds 0` per dataset size "
             f"(`scripts/scaling.py`; 1-minute load average during the runs: {', '.join(map(str, df['load_average'].to_list())) if 'load_average' in df.columns else '?'}).\n\n{table(df)}\n\n"
             f"![scaling](scaling.png)\n\n{END}")
    update_doc(DOCS / "performance.md", block)
    print(f"wrote {DOCS / 'scaling.csv'}, {DOCS / 'scaling.png'}, {DOCS / 'performance.md'}")


if __name__ == "__main__":
    main()
