"""Reproducible seeds: every random draw of a run (shuffling, augmentation, synthetic anomalies, a method's own
loop) is seeded from integers it can name again, so a resumed run and a second run replay the same draws.

The lowest layer of the package, beside :mod:`brainuad.errors` and :mod:`brainuad.schema`: models and data both use it.
"""

from __future__ import annotations

import numpy as np


def batch_seed(*keys: int) -> int:
    """A reproducible per-volume seed from integers (run seed, epoch, step, position, volume index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
