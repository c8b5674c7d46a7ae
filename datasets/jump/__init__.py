"""``jump``: JUMP-CP (cpg0016, CC0) prepared into the platebench index + packed store.

Prepare once with ``bench data prepare jump`` (see docs/jump.md and DATA_CARD.md);
``load_dataset("jump")`` then opens the prepared folder.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..registry import register_dataset
from ..dataset import META_FILE, Dataset, open_dataset
from .options import PrepareOptions, default_out
from .overview import JumpPlan, plan_jump
from .prepare import PrepareReport, prepare_jump


@register_dataset("jump", "JUMP-CP cpg0016: real Cell Painting images (CC0); "
                          "prepare it first with `bench data prepare jump`")
def load_jump(root: Path | None = None) -> Dataset:
    """Open the prepared JUMP-CP dataset (default: ``$PLATEBENCH_CACHE/jump``)."""
    root = Path(root).expanduser() if root is not None else default_out()
    if not (root / META_FILE).is_file():
        raise DataError(f"JUMP-CP is not prepared in {root}; run `bench data prepare jump --out {root}` "
                        "first (it downloads from the public Cell Painting Gallery; see docs/jump.md)")
    return open_dataset(root, verify="size")


__all__ = ["JumpPlan", "PrepareOptions", "PrepareReport", "default_out", "load_jump", "plan_jump",
           "prepare_jump"]
