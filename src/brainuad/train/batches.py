"""Batches for training: which volumes each step takes, gathered from the cache one step ahead by a thread.

The plan (:func:`plan_batches`) is a pure function of (seed, epoch, rank), so a resumed run draws the same batches.
:class:`Prefetcher` reads the next batch from the memory-mapped cache into (pinned, on CUDA) host memory while the
current step runs; the main thread copies it to the device without waiting and augments it there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from brainuad.data.augmentation import Augmenter
from brainuad.data.datasets import VolumeCache
from brainuad.seeds import batch_seed


def plan_batches(
    indices: list[int], batch_size: int, seed: int, epoch: int, rank: int, world: int, steps: int = 0
) -> list[list[int]]:
    """This rank's batches for an epoch: a shuffled pass (the same permutation on every rank, split round-robin),
    or ``steps`` batches drawn with replacement."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if steps:
        draws = torch.randint(len(indices), (steps * batch_size * world,), generator=generator).tolist()
        order = [indices[i] for i in draws]
    else:
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        per_rank = math.ceil(len(order) / world)
        order = (order * world)[: per_rank * world]  # pad so every rank takes the same number of steps
    mine = order[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def gather(cache: VolumeCache, ids: list[int], pin: bool = False) -> torch.Tensor:
    """Volumes ``ids`` from the cache as one ``(N, 1, D, H, W)`` host tensor.

    Pinned (for a GPU): the cache's float16, page-locked — half the bytes to copy, converted on the device.
    Otherwise float32 (the conversion is exact either way, so both give the same volumes).
    """
    dtype = torch.float16 if pin else torch.float32
    out = torch.empty((len(ids), 1, *cache.volume_shape), dtype=dtype, pin_memory=pin)
    for row, index in enumerate(ids):
        out[row, 0].numpy()[...] = cache.array[index]  # straight into the (pinned) buffer
    return out


def to_device(
    host: torch.Tensor,
    ids: list[int],
    device: torch.device,
    augmenter: Augmenter | None = None,
    seed_keys: tuple[int, int, int] = (0, 0, 0),
) -> torch.Tensor:
    """A gathered batch on ``device`` (without waiting for the copy), augmented there.

    Volume ``position`` of the batch is augmented with seed ``batch_seed(*seed_keys, position, index)`` — seed keys
    (run seed, epoch, step) — so a resumed run replays every draw.
    """
    batch = host.to(device, non_blocking=host.is_pinned()).float()
    if augmenter is None:
        return batch
    return augmenter(batch, [batch_seed(*seed_keys, position, index) for position, index in enumerate(ids)])


class Prefetcher:
    """Iterates ``(step, ids, host batch)`` over ``batches``, gathering batch k + 1 in a thread while k is used.

    Args:
        cache: The volumes.
        batches: Volume indices per step.
        pin: Gather into page-locked memory (for asynchronous copies to a GPU).
        device: The GPU the batches go to (the thread pins memory for it).
    """

    def __init__(
        self, cache: VolumeCache, batches: list[list[int]], pin: bool = False, device: torch.device | None = None
    ):
        self.cache, self.batches, self.pin, self.device = cache, batches, pin, device

    def _start_thread(self) -> None:
        # As DataLoader's pin-memory thread: pin for this rank's GPU, not in a new context on GPU 0.
        # A bare "cuda" device has no index: the thread then stays on the default GPU.
        if self.pin and self.device is not None and self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)

    def __iter__(self) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        if not self.batches:
            return
        with ThreadPoolExecutor(1, "brainuad-gather", initializer=self._start_thread) as pool:
            pending = pool.submit(gather, self.cache, self.batches[0], self.pin)
            try:
                for step, ids in enumerate(self.batches):
                    host = pending.result()
                    if step + 1 < len(self.batches):
                        pending = pool.submit(gather, self.cache, self.batches[step + 1], self.pin)
                    yield step, ids, host
            finally:
                pending.cancel()
