"""Training on healthy scans only: a plain loop, resumable, bf16/channels-last/compile on GPU, DDP via torchrun.

A run folder describes itself::

    config.json          the whole config tree (model built for the data's crop grid)
    split.json           train/validation case folders and the seed that drew them (written once)
    model.safetensors    best weights by validation loss (validated every ``val_every`` epochs and at the end)
    last.safetensors + last_optimizer.safetensors + state.json
                         the latest checkpoint, for --resume (every ``checkpoint_minutes`` of wall time, and at the end)
    log.csv              one row per epoch;  loss_curve.png;  tensorboard/ (when tensorboard is installed)
    provenance.json      library versions, git hash, platform;  summary.json at the end
    cache/               the training volumes as one memory-mapped float16 array

Determinism: the shuffling and every augmentation draw are seeded from (seed, epoch, step, index), and checkpoints
are taken at epoch ends, so on CPU an interrupted run resumed with ``--resume`` ends with the same weights bit for bit
(epochs after the last checkpoint are run again; their log rows are dropped first).

Speed: batches are gathered from the cache by a background thread one step ahead, augmented on the device as a
batch, and the step's losses stay on the device until the epoch ends (:mod:`brainuad.train.step`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from brainuad.config import Config, PreprocessConfig, TrainConfig, from_dict, replace
from brainuad.data.augmentation import Augmenter
from brainuad.data.datasets import VolumeCache, check_one_cohort, find_case_folders
from brainuad.errors import BrainuadError
from brainuad.io.provenance import provenance
from brainuad.io.volumes import ensure_writable_folder, load_volume, read_grid, read_json, write_json
from brainuad.models import build_model, count_parameters
from brainuad.models.base import FitContext, get_method
from brainuad.seeds import batch_seed
from brainuad.train.batches import Prefetcher, gather, plan_batches, to_device
from brainuad.train.checkpoints import (
    Checkpointer,
    load_config,
    load_optimizer,
    load_weights,
    save_config,
    save_weights,
)
from brainuad.train.device import distributed, ranks_in_sync, resolve_device
from brainuad.train.runfolder import (
    absolute_split,
    append_log,
    lock_run_folder,
    prepare_run,
    resume_log,
    warn_if_long,
    write_summary,
)
from brainuad.train.step import TrainStep, learning_rate, reconstruction_loss

CPU = torch.device("cpu")


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    epochs_done: int
    best_val_loss: float
    best_epoch: int
    history: list[dict]


def _load_batch(
    cache: VolumeCache,
    ids: list[int],
    augmenter: Augmenter | None,
    seed: int,
    epoch: int,
    step: int,
    device: torch.device = CPU,
) -> torch.Tensor:
    """Volumes from the cache, on ``device``, augmented there (volume seeds: (seed, epoch, step, position, index))."""
    host = gather(cache, ids, pin=device.type == "cuda")
    return to_device(host, ids, device, augmenter, (seed, epoch, step))


def train(
    data: list[str | Path],
    run_dir: str | Path,
    config: Config | None = None,
    resume: bool = False,
    progress: bool = True,
    deadline: float | None = None,
    val_data: list[str | Path] | None = None,
) -> TrainResult:
    """Train the autoencoder on preprocessed healthy scans.

    Args:
        data: Folders of preprocessed cases (``brainuad preprocess`` output) or case folders themselves.
        run_dir: Run folder to create (or to continue with ``resume``).
        config: Model and training settings; the model's ``input_shape`` is taken from the data.
        resume: Continue from the last completed epoch.
        progress: Show a progress bar (steps within the epoch, loss, ETA).
        deadline: A :func:`time.monotonic` time budget: after the first epoch of this call, no epoch starts that
            would (at the last epoch's pace) end after it; ``summary.json`` then says training stopped at the budget.
        val_data: Folders of preprocessed validation cases; default: ``val_fraction`` of ``data``, drawn at random.

    Raises:
        InputError: No cases, mismatched shapes, nothing to resume.
        BrainuadError: Cases mixing crop grids, template contrasts or modalities.
        BrainuadError: Out of memory (with advice), a run folder that already holds a run.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    given = config
    config = config or Config()
    run_dir = Path(run_dir)
    rank, world = distributed()
    case_folders = find_case_folders(list(data))
    val_folders = find_case_folders(list(val_data)) if val_data else []
    check_one_cohort(case_folders + val_folders, "--data" + (" and --val-data" if val_folders else ""))
    if rank == 0:
        ensure_writable_folder(run_dir)
        lock_run_folder(run_dir)  # held until the process ends
        config, split = prepare_run(case_folders, run_dir, config, resume, given, val_folders)
    elif resume:
        config, split = prepare_run(case_folders, run_dir, config, resume, given, val_folders)
    else:
        # Rank 0 draws the split and writes config.json first; another rank calling _prepare_run could find that
        # file already written and refuse the folder as "already holds a run".
        torch.distributed.barrier()
        config, split = load_config(run_dir / "config.json"), absolute_split(read_json(run_dir / "split.json"), run_dir)
    cache_dir = run_dir / "cache"
    all_cases = sorted(set(split["train"]) | set(split["val"]))

    tc: TrainConfig = config.training
    if not resume:
        # The model is built for the data's crop, and detection must preprocess new scans the same way.
        record = read_json(Path(all_cases[0]) / "record.json")
        if "preprocessing" in record:
            config = replace(config, preprocessing=from_dict(PreprocessConfig, record["preprocessing"]))
        shape, _ = read_grid(Path(all_cases[0]) / "image.nii.gz")
        config = replace(config, model=replace(config.model, input_shape=shape))
    augment = tc.augment == "on" or (tc.augment == "auto" and len(set(split["train"])) < tc.augment_below)
    augmenter = Augmenter() if augment else None
    if rank == 0 and not resume:
        # Written before the cache: a run that fails while caching (disk full) can be resumed.
        save_config(config, run_dir / "config.json")
        write_json(run_dir / "split.json", split)
        write_json(
            run_dir / "provenance.json",
            {**provenance(), "augmentation": augmenter.description if augmenter else "off", "world_size": world},
        )
        if world > 1:
            torch.distributed.barrier()  # the other ranks read config.json and split.json now
    if rank == 0:
        cache = VolumeCache([Path(p) for p in all_cases], cache_dir / "volumes.npy")
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        cache = VolumeCache([Path(p) for p in all_cases], cache_dir / "volumes.npy")
    position = {p: i for i, p in enumerate(all_cases)}
    train_ids = [position[p] for p in split["train"]]
    val_ids = [position[p] for p in split["val"]]

    device = resolve_device(tc.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    torch.manual_seed(tc.seed)
    method = get_method(config.model.kind)
    model = build_model(config.model).to(device)
    method.prepare(model, cache.array, train_ids)
    if not method.learns:
        # Baselines learn nothing by gradient (the intensity model nothing at all; the normative model its cohort
        # statistics, just set): the run folder holds the config, split and weights, so calibrate, detect and
        # evaluate treat them like any model.
        if rank == 0:
            save_weights(model, run_dir / "model.safetensors")
            check = _reconstruction_check(run_dir, config, cache, train_ids, val_ids, all_cases, device)
            write_summary(
                run_dir,
                count_parameters(model),
                {"epoch": 0, "best_val_loss": math.nan, "best_epoch": 0},
                [],
                world,
                None,
                check,
            )
        return TrainResult(run_dir, 0, math.nan, 0, [])
    if not method.resumable and (resume or world > 1):
        raise BrainuadError(f"{method.name} training runs on one device and cannot be resumed; start a new run")
    context = _fit_context(config, run_dir, cache, train_ids, val_ids, augmenter, device, progress)
    outcome = method.fit(model, context)
    if outcome is not None:  # the method ran its own loop
        state = {"epoch": outcome.epochs, "best_val_loss": outcome.best_val_loss, "best_epoch": outcome.best_epoch}
        check = _reconstruction_check(run_dir, config, cache, train_ids, val_ids, all_cases, device)
        write_summary(run_dir, count_parameters(model), state, outcome.history, world, None, check)
        return TrainResult(run_dir, outcome.epochs, outcome.best_val_loss, outcome.best_epoch, outcome.history)
    use_cuda = device.type == "cuda"
    if use_cuda and tc.channels_last:
        # Before the optimiser state is restored: its moments take the layout of the parameters they belong to.
        model = model.to(memory_format=torch.channels_last_3d)
    # One fused kernel for the update on CUDA (the 189 M fully-connected parameters of the paper's network);
    # PyTorch's default elsewhere, so CPU runs and their resume stay bit for bit as before.
    fused = True if use_cuda else None
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)
    state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0}
    if resume and (run_dir / "state.json").is_file():
        state = read_json(run_dir / "state.json")
        load_weights(model, run_dir / "last.safetensors")
        load_optimizer(optimizer, run_dir / "last_optimizer.safetensors")
    step_model: nn.Module = model
    if world > 1:
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    train_step = TrainStep(model, step_model, optimizer, tc, device)
    autocast = train_step.autocast
    checkpointer = Checkpointer(run_dir, model, optimizer, tc.checkpoint_minutes, enabled=rank == 0)

    writer = SummaryWriter(str(run_dir / "tensorboard")) if rank == 0 else None
    history = []
    if resume:
        history = resume_log(run_dir / "log.csv", state["epoch"], rewrite=rank == 0)
    total_epochs = tc.epochs
    stopped_at_budget, seconds = False, 0.0
    steps = len(plan_batches(train_ids, tc.batch_size, tc.seed, 1, rank, world, tc.steps_per_epoch))
    steps_per_epoch = steps
    # One bar per epoch (steps, loss, the epoch's ETA); the epoch count and last losses in its description.
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress or rank)
    of = "until the time budget" if deadline else f"of {total_epochs}"
    # This process's first epoch (after --resume too) predicts the rest; its second when compiling: the first pays
    # for the compilation.
    pace_epoch = state["epoch"] + 1 + int(train_step.compiled)
    try:
        for epoch in range(state["epoch"] + 1, total_epochs + 1):
            start = time.perf_counter()
            model.train()
            batches = plan_batches(train_ids, tc.batch_size, tc.seed, epoch, rank, world, tc.steps_per_epoch)
            bar.reset(total=len(batches))
            bar.set_description(f"train epoch {epoch} {of}")
            loss_sum = torch.zeros((), device=device)
            for step, ids, host in Prefetcher(cache, batches, pin=use_cuda, device=device):
                lr = learning_rate(tc, (epoch - 1) * steps_per_epoch + step, total_epochs * steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = to_device(host, ids, device, augmenter, (tc.seed, epoch, step))
                loss = train_step(batch, batch_seed(tc.seed, epoch, step, rank, 1))
                loss_sum += loss
                bar.update(1)
                if progress and not rank and not use_cuda:  # on a GPU, float() would wait for it at every step
                    bar.set_postfix(loss=f"{float(loss):.5f}")
            if world > 1:
                # DDP keeps parameters identical; BatchNorm running statistics drift per rank: take rank 0's.
                for buffer in model.buffers():
                    torch.distributed.broadcast(buffer, 0)
            train_loss = float(loss_sum) / max(1, len(batches))  # the epoch's one wait for the device
            # Single process with a time budget: stop when another epoch at this pace (the last one's, validation
            # included) would end after it.
            pace = max(time.perf_counter() - start, seconds)
            stopped_at_budget = bool(deadline) and world == 1 and time.monotonic() + pace > deadline
            last = epoch == total_epochs or stopped_at_budget
            validate = epoch % tc.val_every == 0 or last
            val_loss = (
                evaluate_loss(model, cache, val_ids, device, tc.batch_size, autocast, tc.loss_mask)
                if validate
                else math.nan
            )
            if not math.isfinite(train_loss) or (validate and not math.isfinite(val_loss)):
                # Diverged: the weights are garbage now; the last checkpoint (before this) stays for --resume.
                raise BrainuadError(
                    f"{run_dir}: training diverged at epoch {epoch} (train loss {train_loss}, validation loss "
                    f"{val_loss}); lower --lr (now {tc.lr:g}). The last checkpoint is kept"
                )
            seconds = time.perf_counter() - start
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": round(seconds, 3),
                "volumes_per_s": round(sum(map(len, batches)) * world / seconds, 3),
                "lr": optimizer.param_groups[0]["lr"],
            }
            history.append(row)
            state["epoch"] = epoch
            if rank == 0:
                if validate and val_loss < state["best_val_loss"]:
                    state.update(best_val_loss=val_loss, best_epoch=epoch)
                    checkpointer.keep_best()
                append_log(run_dir / "log.csv", row)
                if writer is not None:
                    writer.add_scalars("loss", {"train": train_loss, **({"val": val_loss} if validate else {})}, epoch)
            checkpointer.maybe_save(dict(state), force=last)
            bar.set_postfix(train=f"{train_loss:.5f}", val=f"{val_loss:.5f}", epoch_s=f"{seconds:.1f}")
            if rank == 0 and not deadline and epoch == pace_epoch:
                warn_if_long(run_dir, epoch, total_epochs - epoch, seconds, device)
            if stopped_at_budget:
                break
    except torch.cuda.OutOfMemoryError as exc:
        raise BrainuadError(
            f"out of GPU memory at batch size {tc.batch_size}; try --batch-size {max(1, tc.batch_size // 2)}"
        ) from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "not enough memory" in str(exc).lower():
            raise BrainuadError(
                f"out of memory at batch size {tc.batch_size}; try --batch-size {max(1, tc.batch_size // 2)}"
            ) from exc
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    in_sync = ranks_in_sync(model, world)
    if rank == 0:
        check = _reconstruction_check(run_dir, config, cache, train_ids, val_ids, all_cases, device)
        write_summary(run_dir, count_parameters(model), state, history, world, in_sync, check)
        if stopped_at_budget:
            summary = read_json(run_dir / "summary.json")
            write_json(run_dir / "summary.json", {**summary, "stopped_at_time_budget": True})
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, state["epoch"], state["best_val_loss"], state["best_epoch"], history)


def _fit_context(
    config: Config,
    run_dir: Path,
    cache: VolumeCache,
    train_ids: list[int],
    val_ids: list[int],
    augmenter: Augmenter | None,
    device: torch.device,
    progress: bool,
) -> FitContext:
    """What a method with its own loop (:meth:`brainuad.models.base.Method.fit`) may use of the run: the batches as
    the default loop draws them, validation, the log and the run folder's files."""
    tc = config.training
    return FitContext(
        config=config,
        device=device,
        train_ids=train_ids,
        val_ids=val_ids,
        plan=lambda seed, epoch: plan_batches(train_ids, tc.batch_size, seed, epoch, 0, 1, tc.steps_per_epoch),
        load=lambda ids, epoch, step: _load_batch(cache, ids, augmenter, tc.seed, epoch, step, device),
        validation_loss=lambda model, brain_only=False: evaluate_loss(
            model, cache, val_ids, device, tc.batch_size, None, brain_only
        ),
        log=lambda row: append_log(run_dir / "log.csv", row),
        save=lambda model, name: save_weights(model, run_dir / name),
        record=lambda name, data: write_json(run_dir / name, data),
        progress=progress,
    )


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


def _reconstruction_check(
    run_dir: Path,
    config: Config,
    cache: VolumeCache,
    train_ids: list[int],
    val_ids: list[int],
    cases: list[str],
    device: torch.device,
) -> dict:
    """The learned-nothing guard (:mod:`brainuad.train.guard`) on the validation split, with the saved (best)
    weights."""
    from brainuad.train.guard import reconstruction_check

    best = build_model(config.model).to(device)
    load_weights(best, run_dir / "model.safetensors")
    masks = [load_volume(Path(cases[i]) / "brain_mask.nii.gz").array > 0.5 for i in val_ids]
    return reconstruction_check(best, cache.array, train_ids, val_ids, masks, device, config.model.kind)
