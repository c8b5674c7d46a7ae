"""Seeds keyed by names: the same plate, scenario or level draws the same numbers on every host and process.

Python's ``hash`` of a string changes between processes, so every per-plate generator of the
benchmark derives its seed from a stable hash of the name instead:

- :func:`plate_entropy` — the fit seed, the CRC-32 of the plate's name and optional stream numbers
  (the TTA methods' online pass; ``core.bn_policies.plate_generator``, the BN contexts of ARM-BN /
  CS-ARM-BN / BEN, still spells the same entropy out itself: it is part of the model cache's code
  version, so moving it here retrains every cached model — do it when that version changes anyway);
- :func:`name_key` — 64 bits of the SHA-256 of a text (the label-shift cuts, the scenarios' cases).

Each caller keeps the key it was introduced with, so no committed number moves; a new generator
should use :func:`name_key` (a collision of two plate names under CRC-32 is possible, under SHA-256 not).

These seeds are public: a method can re-draw whatever they draw. Anything handed to a method whose
order or selection must not be predictable to it — the shuffle of a target plate, the target views
of a transductive fit, a scenario's cuts — is drawn by :mod:`benchmark.protocol.orders` instead, keyed by the
dataset's full index (labels included, which the sealed worker never sees); the public keys above
survive there only as its ``public-v0`` scheme, so older records still verify bit for bit.
"""

from __future__ import annotations

import hashlib
import zlib


def plate_entropy(seed: int, plate: str, *streams: int) -> list[int]:
    """``[seed, CRC-32 of plate, *streams]``: the entropy of ``np.random.default_rng`` for one plate's draws."""
    return [seed, zlib.crc32(plate.encode()), *streams]


def name_key(text: str) -> int:
    """The first 8 bytes of the SHA-256 of ``text``, little-endian: a stable 64-bit key of a name."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
