"""The leaderboard figure: accuracy by method and setting (in-domain, leave-batch-out,
leave-source-out), bars = mean over folds × seeds, error bars = standard deviation."""

from __future__ import annotations

from pathlib import Path

from ..records import Record

SETTINGS = ("in-domain", "leave-batch-out", "leave-source-out")


def accuracy_long_table(records: list[Record]) -> list[dict]:
    """One row per (run, setting): method, setting, accuracy (in-domain rows come from both splits)."""
    rows = []
    for r in records:
        m = r.data["metrics"]
        ood = {"batch_out": "leave-batch-out", "source_out": "leave-source-out"}.get(r.split)
        for setting, value in (("in-domain", m["in_domain"].get("accuracy")),
                               (ood, m["out_of_domain"].get("accuracy"))):
            if setting and value is not None:
                rows.append({"method": r.method, "setting": setting, "accuracy": float(value)})
    return rows


def accuracy_figure(records: list[Record], path: Path, method_order: list[str]) -> Path:
    """Draw the grouped bar chart to ``path`` (PNG, Agg backend, no timestamp metadata) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    table = pd.DataFrame(accuracy_long_table(records), columns=["method", "setting", "accuracy"])
    hue_order = [s for s in SETTINGS if s in set(table["setting"])]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(method_order) + 2), 3.8))
    sns.barplot(data=table, x="method", y="accuracy", hue="setting", order=method_order, hue_order=hue_order,
                errorbar="sd", capsize=0.1, ax=ax)
    ax.set_ylim(0, 1)
    ax.axhline(1 / 8, color="grey", lw=0.8, ls=":", label="chance (1/8)")
    ax.set_ylabel("accuracy (mean ± sd over folds × seeds)")
    ax.set_xlabel("")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, dpi=120)


def save_figure(fig: object, path: Path, dpi: int) -> Path:
    """Lay out ``fig``, write it to ``path`` as PNG without timestamp metadata (under a temporary name, then
    renamed, so a killed write leaves no half image), close it and return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path
