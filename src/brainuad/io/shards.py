"""Shards: a fixed partition of a batch's scans, so that N jobs on N machines each do their share into one folder.

Shard ``K/N`` (``0 <= K < N``) takes the scans at positions ``K, K + N, K + 2N, …`` of the batch's list sorted by
output name. Every job lists the same inputs, so the shards are disjoint and together cover the batch; output names
are decided on the whole list before the shard is taken, so they never depend on the shard. Inside a SLURM array job
(``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` set) the shard is the task's, counted from
``SLURM_ARRAY_TASK_MIN``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from brainuad.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= K < N (e.g. --shard 0/4 … 3/4)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def take(self, items: Mapping[T, str]) -> list[T]:
        """The items of this shard, from ``{item: output name}`` (sorted by name, every ``count``-th one)."""
        ordered = sorted(items, key=lambda item: items[item])
        return ordered[self.index :: self.count]


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard K/N`` as a :class:`Shard`; without it, the SLURM array task's shard when one is set, else ``None``.

    Raises:
        ConfigError: ``text`` is not ``K/N`` with ``0 <= K < N``, the SLURM variables are not numbers, or the task
            ID is set without the task count.
    """
    if text is not None:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ConfigError(f"--shard must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
        return Shard(int(match.group(1)), int(match.group(2)))
    environ = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    if "SLURM_ARRAY_TASK_COUNT" not in environ:
        # Ignoring the task would make every task of the array process every scan into the same folder.
        raise ConfigError(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (an older SLURM?): pass --shard K/N, or "
            "unset SLURM_ARRAY_TASK_ID to process every scan in this task"
        )
    try:
        task = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        return Shard(task, int(environ["SLURM_ARRAY_TASK_COUNT"]))
    except ValueError:
        raise ConfigError(
            "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT/SLURM_ARRAY_TASK_MIN are not numbers; pass --shard K/N"
        ) from None
