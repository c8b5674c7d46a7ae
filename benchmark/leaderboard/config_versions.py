"""One config per leaderboard row: a method's records made with an older config are set aside, never averaged in.

While a table is regenerated at a new default (issue 26: converged training instead of 3 epochs) the results
folder holds, for a while, some records of a method at the new config and the rest at the old one. A row must
not average the two budgets, so for every (dataset version, method) only the records of the config that was
used last (the newest ``created`` stamp) count; the others are listed as superseded with the fields that differ.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from ..records import Record


BUDGET_FIELDS = ("max_epochs", "patience", "schedule", "optimizer", "lr_patience", "lr_decay", "min_delta",
                 "weight_average", "augment")
"""Config fields that say how long and how a network trains: two records that both have one must agree on it to
be compared in a paired difference (a 3-epoch ERM is no baseline for a converged method, nor the reverse)."""


def same_budget(a: Record, b: Record) -> bool:
    """Whether the training-budget fields (:data:`BUDGET_FIELDS`) the two records' configs share agree."""
    ca, cb = a.data["method"]["config"], b.data["method"]["config"]
    return all(ca[k] == cb[k] for k in BUDGET_FIELDS if k in ca and k in cb)


def _config_key(record: Record) -> str:
    return json.dumps(record.data["method"]["config"], sort_keys=True)


@dataclass(frozen=True)
class Superseded:
    """Records of a method left out because a newer config of it exists."""

    method: str
    records: list[Record]
    differs: dict[str, tuple[object, object]]  # field -> (old value, current value)

    def reason(self) -> str:
        fields = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in sorted(self.differs.items()))
        return (f"{len(self.records)} record(s) of `{self.method}` made with an older config ({fields}): the row "
                "shows the current config's records only; rerun `bench sweep` to replace them")


def newest_config(records: list[Record]) -> tuple[list[Record], list[Superseded]]:
    """Split ``records`` into those of each (dataset version, method)'s newest config, and the superseded rest."""
    groups: dict[tuple[str, str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[(r.dataset, r.fingerprint, r.method)][_config_key(r)].append(r)
    kept: list[Record] = []
    superseded: list[Superseded] = []
    for (_, _, method), by_config in groups.items():
        newest = max(by_config, key=lambda key: max(str(r.data.get("created", "")) for r in by_config[key]))
        kept += by_config[newest]
        current = json.loads(newest)
        for key, old_records in by_config.items():
            if key == newest:
                continue
            old = json.loads(key)
            differs = {k: (old.get(k), current.get(k)) for k in sorted(set(old) | set(current))
                       if old.get(k) != current.get(k)}
            superseded.append(Superseded(method, old_records, differs))
    kept_ids = {id(r) for r in kept}
    return [r for r in records if id(r) in kept_ids], superseded
