"""Order keys: the generators of every order and subsample the evaluator hands a method, under a named scheme.

The evaluator shuffles each target plate's treated images before a method sees them, and
the scenarios cut plates (label-shift class mixes, control budgets, support groups). If a
method can re-draw those numbers it can undo the shuffle and, with a fixed plate layout
(JUMP's: the same wells hold the same compounds on every plate), read off every image's
label. Two schemes, named in each record's header (``"orders": {"scheme": ...}``):

- ``public-v0`` (:data:`PUBLIC_V0`): the generators of the records made before this module,
  public functions of (split seed, fold, seed) and of (scenario, level, plate) —
  ``default_rng([split_seed, fold, seed, 7])`` for the evaluation, ``11`` for the target views
  of a transductive fit, ``[13, crc32("scenario|level")]`` for a scenario's shuffles, and
  ``name_key("platebench-scenario|scenario|level|plate")`` for a scenario's cuts. Kept only so
  ``bench verify`` re-runs those records bit for bit; a record without ``orders`` was made with it.
- ``keyed-v1`` (:data:`KEYED_V1`, the default of new runs): every generator is seeded by the
  SHA-256 of the *order key* — the digest of the dataset's full index (:data:`KEY_COLUMNS` of
  every row in index order, every target image's label among them) — and the same public
  parts (split seed, fold, seed, purpose; scenario, level, plate for a cut). Deterministic:
  a re-run on the same data draws the same numbers, bit for bit.

What the key hides: the sealed worker never receives the target rows' labels (nor the full
index), so it cannot compute the digest, and without it the permutation of a plate's view is
uniformly random to the method: knowing the layout no longer tells it which image is which.
Scenario cuts are keyed by the dataset and (scenario, level, plate) only, so every method,
seed and fold still sees the same cut of the same plate.

Residual: the key is a function of public inputs only when the whole index is: a method that
regenerates the whole dataset (the synthetic simulator is public and deterministic; a JUMP
index rebuilt from the public metadata by the public preparation code) can compute the key —
but then it holds every target label already and has no need of the orders. Shipping or
rebuilding the dataset (or its index) inside a method is cheating by reading labels, which
no order scheme can stop: that is a matter for review of the submitted code. A method run in
the evaluator's process (``LocalHost``: tests, conformance checks) holds the dataset object
and is not sealed by anything.
"""

from __future__ import annotations

import hashlib
import json
import weakref
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import UnknownNameError
from ..seeding import name_key

if TYPE_CHECKING:
    import polars as pl

    from ..datasets.dataset import Dataset
    from ..splits import Fold

OrderScheme = Literal["public-v0", "keyed-v1"]
PUBLIC_V0: OrderScheme = "public-v0"
KEYED_V1: OrderScheme = "keyed-v1"
ORDER_SCHEMES: tuple[str, ...] = (PUBLIC_V0, KEYED_V1)
DEFAULT_ORDER_SCHEME: OrderScheme = KEYED_V1
"""The scheme of new runs."""

EVALUATION = "evaluation"
"""Purpose: the shuffle of every evaluated plate's treated images (public-v0 stream 7)."""
TARGET_VIEWS = "target_views"
"""Purpose: the shuffle of the target views a transductive method gets in ``fit`` (public-v0 stream 11)."""
_SCENARIO = "scenario:"

KEY_COLUMNS: tuple[str, ...] = ("image_id", "source", "batch", "plate", "well", "site", "compound", "label",
                                "is_control")
"""The index columns the order key digests, every row in index order (storage columns left out)."""
_DOMAIN = b"platebench-orders/keyed-v1\n"

_DIGESTS: dict[int, tuple[weakref.ref, bytes]] = {}
"""``id(dataset) -> (weak reference, index digest)``: computed once per opened Dataset object."""


def scenario_purpose(scenario: str, level: str) -> str:
    """Purpose: the shuffle of the views of one scenario level (public-v0 streams ``[13, crc32("scenario|level")]``)."""
    return f"{_SCENARIO}{scenario}|{level}"


def check_scheme(scheme: str) -> OrderScheme:
    """``scheme`` if it is a known order scheme; else :class:`UnknownNameError` listing the valid ones."""
    if scheme not in ORDER_SCHEMES:
        raise UnknownNameError("order scheme", str(scheme), ORDER_SCHEMES)
    return scheme  # type: ignore[return-value]


def record_scheme(record: Mapping[str, Any]) -> OrderScheme:
    """The order scheme a record's run drew with: its ``orders.scheme`` (a record without one: public-v0)."""
    orders = record.get("orders")
    if orders is None:
        return PUBLIC_V0
    if not isinstance(orders, Mapping) or "scheme" not in orders:
        raise UnknownNameError("order scheme", str(orders), ORDER_SCHEMES)
    return check_scheme(orders["scheme"])


def orders_header(scheme: str) -> dict[str, str]:
    """The record header's ``orders`` entry of a run drawn with ``scheme``."""
    return {"scheme": check_scheme(scheme)}


def index_digest(dataset: Dataset) -> bytes:
    """SHA-256 of :data:`KEY_COLUMNS` of the dataset's whole index (target labels included); once per Dataset object."""
    entry = _DIGESTS.get(id(dataset))
    if entry is not None and entry[0]() is dataset:
        return entry[1]
    digest = _digest_index(dataset.index)
    key = id(dataset)
    _DIGESTS[key] = (weakref.ref(dataset, lambda _ref, key=key: _DIGESTS.pop(key, None)), digest)
    return digest


def _digest_index(index: pl.DataFrame) -> bytes:
    """SHA-256 of the CSV text of :data:`KEY_COLUMNS` of ``index`` (header included, rows in index order)."""
    return hashlib.sha256(index.select(KEY_COLUMNS).write_csv().encode()).digest()


def _keyed_rng(dataset: Dataset, parts: list[Any]) -> np.random.Generator:
    """A generator seeded by the SHA-256 of the order key and ``parts`` (JSON: unambiguous)."""
    h = hashlib.sha256(_DOMAIN)
    h.update(index_digest(dataset))
    h.update(json.dumps(parts).encode())
    return np.random.default_rng(int.from_bytes(h.digest(), "little"))


def _public_streams(purpose: str) -> list[int]:
    """The public-v0 entropy after ``[split_seed, fold, seed]`` of a purpose."""
    if purpose == EVALUATION:
        return [7]
    if purpose == TARGET_VIEWS:
        return [11]
    if purpose.startswith(_SCENARIO) and len(purpose) > len(_SCENARIO):
        return [13, zlib.crc32(purpose[len(_SCENARIO):].encode())]
    raise ValueError(f"unknown order purpose '{purpose}': use EVALUATION, TARGET_VIEWS or scenario_purpose()")


def order_rng(dataset: Dataset, fold: Fold | int, seed: int, split_seed: int, purpose: str,
              scheme: str = DEFAULT_ORDER_SCHEME) -> np.random.Generator:
    """The generator of the shuffles of one run (``fold``, ``seed``, ``split_seed``) for ``purpose`` under ``scheme``.

    ``purpose``: :data:`EVALUATION`, :data:`TARGET_VIEWS` or :func:`scenario_purpose`. Under public-v0 exactly
    the generator records were made with (``default_rng([split_seed, fold, seed, 7])`` for the evaluation, ...).
    """
    fold_index = int(fold if isinstance(fold, (int, np.integer)) else fold.index)
    streams = _public_streams(purpose)  # also validates the purpose under keyed-v1
    if check_scheme(scheme) == PUBLIC_V0:
        return np.random.default_rng([int(split_seed), fold_index, int(seed), *streams])
    return _keyed_rng(dataset, ["run", int(split_seed), fold_index, int(seed), purpose])


def public_case_rng(scenario: str, level: str, plate: str) -> np.random.Generator:
    """The public-v0 generator of one scenario cut: keyed by (scenario, level, plate) alone."""
    return np.random.default_rng(name_key(f"platebench-scenario|{scenario}|{level}|{plate}"))


def case_rng(dataset: Dataset, scenario: str, level: str, plate: str,
             scheme: str = DEFAULT_ORDER_SCHEME) -> np.random.Generator:
    """The generator of one scenario cut of ``plate``: the same for every method, seed and fold of ``dataset``."""
    if check_scheme(scheme) == PUBLIC_V0:
        return public_case_rng(scenario, level, plate)
    return _keyed_rng(dataset, ["case", scenario, level, plate])


__all__ = ["DEFAULT_ORDER_SCHEME", "EVALUATION", "KEYED_V1", "KEY_COLUMNS", "ORDER_SCHEMES", "OrderScheme",
           "PUBLIC_V0", "TARGET_VIEWS", "case_rng", "check_scheme", "index_digest", "order_rng", "orders_header",
           "public_case_rng", "record_scheme", "scenario_purpose"]
