"""The default gradient loop, a stage at a time: :func:`start_loop` (optimiser, step, checkpointer, log),
:func:`train_epoch` (the steps of one epoch) and :func:`end_epoch` (validation, the log row, the best weights, the
checkpoint, the time budget)."""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from brainuad.config import TrainConfig
from brainuad.data.datasets import VolumeCache
from brainuad.errors import BrainuadError
from brainuad.io.volumes import read_json
from brainuad.seeds import batch_seed
from brainuad.train.batches import Prefetcher, plan_batches, to_device
from brainuad.train.checkpoints import (
    Checkpointer,
    load_optimizer,
    load_weights,
)
from brainuad.train.run import Run
from brainuad.train.runfolder import (
    append_log,
    resume_log,
    warn_if_long,
)
from brainuad.train.step import TrainStep, learning_rate, reconstruction_loss

log = logging.getLogger(__name__)


@dataclass
class Loop:
    """The default gradient loop's moving parts, set by :func:`start_loop`; ``state`` and ``history`` grow with
    each epoch (``state`` is what a checkpoint saves)."""

    optimizer: torch.optim.Optimizer
    train_step: TrainStep
    checkpointer: Checkpointer
    writer: Any
    bar: Any
    state: dict
    history: list[dict]
    steps_per_epoch: int
    deadline: float | None
    pace_epoch: int
    seconds: float = 0.0
    epoch_start: float = 0.0
    stopped_at_budget: bool = False

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def start_loop(run: Run, resume: bool, progress: bool, deadline: float | None) -> Loop:
    """The optimiser (restored with ``resume``), the step, the checkpointer, the log and the progress bar."""
    from tqdm import tqdm

    tc, device, model = run.tc, run.device, run.model
    use_cuda = device.type == "cuda"
    if use_cuda and tc.channels_last:
        # Before the optimiser state is restored: its moments take the layout of the parameters they belong to.
        model = run.model = model.to(memory_format=torch.channels_last_3d)
    # One fused kernel for the update on CUDA (the 189 M fully-connected parameters of the paper's network);
    # PyTorch's default elsewhere, so CPU runs and their resume stay bit for bit as before.
    fused = True if use_cuda else None
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)
    state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0}
    if resume and (run.run_dir / "state.json").is_file():
        state = read_json(run.run_dir / "state.json")
        load_weights(model, run.run_dir / "last.safetensors")
        load_optimizer(optimizer, run.run_dir / "last_optimizer.safetensors")
    step_model: nn.Module = model
    if run.world > 1:
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    train_step = TrainStep(model, step_model, optimizer, tc, device)
    history = resume_log(run.run_dir / "log.csv", state["epoch"], rewrite=run.rank == 0) if resume else []
    steps = len(plan_batches(run.train_ids, tc.batch_size, tc.seed, 1, run.rank, run.world, tc.steps_per_epoch))
    log.debug(
        "gradient loop: %d training scans, %d steps per epoch of batch %d, lr %g, on %s (rank %d of %d)%s",
        len(run.train_ids), steps, tc.batch_size, tc.lr, device, run.rank, run.world, ", resumed" if resume else "",
    )  # fmt: skip
    # One bar per epoch (steps, loss, the epoch's ETA); the epoch count and last losses in its description.
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress or run.rank)
    return Loop(
        optimizer=optimizer,
        train_step=train_step,
        checkpointer=Checkpointer(run.run_dir, model, optimizer, tc.checkpoint_minutes, enabled=run.rank == 0),
        writer=tensorboard_writer(run.run_dir / "tensorboard") if run.rank == 0 else None,
        bar=bar,
        state=state,
        history=history,
        steps_per_epoch=steps,
        deadline=deadline,
        # This process's first epoch (after --resume too) predicts the rest; its second when compiling: the first
        # pays for the compilation.
        pace_epoch=state["epoch"] + 1 + int(train_step.compiled),
    )


def tensorboard_writer(folder) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``folder``, or ``None`` when tensorboard is not installed (an optional
    extra: ``pip install "brainuad[tensorboard]"``; log.csv and loss_curve.png hold the same curves)."""
    writer_class = _summary_writer_class()
    return writer_class(str(folder)) if writer_class is not None else None


@functools.lru_cache(maxsize=1)
def _summary_writer_class() -> Any:
    """torch's ``SummaryWriter``, imported on first use; ``None`` (said once, by the logger) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info(
            'tensorboard is not installed: no TensorBoard events (pip install "brainuad[tensorboard]"); '
            "log.csv and loss_curve.png hold the curves"
        )
        return None
    except Exception as exc:  # an installed tensorboard that does not load (e.g. a protobuf it does not support)
        log.warning("tensorboard could not be loaded, no TensorBoard events: %s", exc)
        return None
    return SummaryWriter


def train_epoch(run: Run, loop: Loop, epoch: int) -> tuple[float, int]:
    """One epoch of steps; returns the mean training loss and the number of volumes this process saw."""
    tc, device, rank = run.tc, run.device, run.rank
    use_cuda = device.type == "cuda"
    run.model.train()
    batches = plan_batches(run.train_ids, tc.batch_size, tc.seed, epoch, rank, run.world, tc.steps_per_epoch)
    loop.bar.reset(total=len(batches))
    of = "until the time budget" if loop.deadline else f"of {tc.epochs}"
    loop.bar.set_description(f"train epoch {epoch} {of}")
    loop.epoch_start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    total_steps = tc.epochs * loop.steps_per_epoch
    for step, ids, host in Prefetcher(run.cache, batches, pin=use_cuda, device=device):
        lr = learning_rate(tc, (epoch - 1) * loop.steps_per_epoch + step, total_steps)
        for group in loop.optimizer.param_groups:
            group["lr"] = lr
        batch = to_device(host, ids, device, run.augmenter, (tc.seed, epoch, step))
        loss = loop.train_step(batch, batch_seed(tc.seed, epoch, step, rank, 1))
        loss_sum += loss
        loop.bar.update(1)
        if not loop.bar.disable and not use_cuda:  # on a GPU, float() would wait for it at every step
            loop.bar.set_postfix(loss=f"{float(loss):.5f}")
    if run.world > 1:
        # DDP keeps parameters identical; BatchNorm running statistics drift per rank: take rank 0's.
        for buffer in run.model.buffers():
            torch.distributed.broadcast(buffer, 0)
    return float(loss_sum) / max(1, len(batches)), sum(map(len, batches))  # the epoch's one wait for the device


def end_epoch(run: Run, loop: Loop, epoch: int, train_loss: float, volumes: int) -> bool:
    """Validation (every ``val_every`` epochs and at the end), the log row, the best weights, the checkpoint and the
    time budget; returns whether training stops here."""
    tc, state, rank = run.tc, loop.state, run.rank
    # Single process with a time budget: stop when another epoch at this pace (the last one's, validation included)
    # would end after it.
    pace = max(time.perf_counter() - loop.epoch_start, loop.seconds)
    loop.stopped_at_budget = bool(loop.deadline) and run.world == 1 and time.monotonic() + pace > loop.deadline
    last = epoch == tc.epochs or loop.stopped_at_budget
    validate = epoch % tc.val_every == 0 or last
    val_loss = math.nan
    if validate:
        val_loss = evaluate_loss(
            run.model, run.cache, run.val_ids, run.device, tc.batch_size, loop.train_step.autocast,
            loop.train_step.brain_only,
        )
    if not math.isfinite(train_loss) or (validate and not math.isfinite(val_loss)):
        # Diverged: the weights are garbage now; the last checkpoint (before this) stays for --resume.
        raise BrainuadError(
            f"{run.run_dir}: training diverged at epoch {epoch} (train loss {train_loss}, validation loss "
            f"{val_loss}); lower --lr (now {tc.lr:g}). The last checkpoint is kept"
        )
    loop.seconds = seconds = time.perf_counter() - loop.epoch_start
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "seconds": round(seconds, 3),
        "volumes_per_s": round(volumes * run.world / seconds, 3),
        "lr": loop.optimizer.param_groups[0]["lr"],
    }
    loop.history.append(row)
    state["epoch"] = epoch
    if rank == 0:
        if validate and val_loss < state["best_val_loss"]:
            state.update(best_val_loss=val_loss, best_epoch=epoch)
            loop.checkpointer.keep_best()
        append_log(run.run_dir / "log.csv", row)
        if loop.writer is not None:
            loop.writer.add_scalars("loss", {"train": train_loss, **({"val": val_loss} if validate else {})}, epoch)
    loop.checkpointer.maybe_save(dict(state), force=last)
    loop.bar.set_postfix(train=f"{train_loss:.5f}", val=f"{val_loss:.5f}", epoch_s=f"{seconds:.1f}")
    if rank == 0 and not loop.deadline and epoch == loop.pace_epoch:
        warn_if_long(run.run_dir, epoch, tc.epochs - epoch, seconds, run.device)
    return loop.stopped_at_budget


def out_of_memory(tc: TrainConfig, what: str) -> str:
    return f"out of {what} at batch size {tc.batch_size}; try --batch-size {max(1, tc.batch_size // 2)}"


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    cache: VolumeCache,
    ids: list[int],
    device: torch.device,
    batch_size: int,
    autocast=None,
    brain_only: bool = False,
) -> float:
    """Mean squared reconstruction error over volumes (or inside the brain only), in eval mode (no augmentation)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    for _step, chunk, host in Prefetcher(cache, batches, pin=device.type == "cuda", device=device):
        batch = to_device(host, chunk, device)
        with autocast or torch.autocast("cpu", enabled=False):
            output = model(batch).float()
        inside = (batch > 0) if brain_only else torch.ones_like(batch, dtype=torch.bool)
        total += reconstruction_loss(output, batch, brain_only).double() * inside.sum()
        count += inside.sum()
    return float(total) / max(1.0, float(count))
