"""Training on healthy scans only: a plain loop, resumable, bf16/channels-last/compile on GPU, DDP via torchrun.

A run folder describes itself::

    config.json          the whole config tree (model built for the data's crop grid)
    split.json           train/validation case folders and the seed that drew them (written once)
    model.safetensors    best weights by validation loss (validated every ``val_every`` epochs and at the end)
    last.safetensors + last_optimizer.safetensors + state.json
                         the latest checkpoint, for --resume (every ``checkpoint_minutes`` of wall time, and at the end)
    log.csv              one row per epoch;  loss_curve.png;  tensorboard/ (when tensorboard is installed)
    provenance.json      library versions, git hash, platform;  summary.json at the end

The training volumes are cached as one memory-mapped float16 array outside the run folder (in brainuad's cache
folder, ``$BRAINUAD_CACHE_DIR`` or ``~/.cache/brainuad``: :class:`brainuad.data.datasets.VolumeCache`), removed when
training finishes and kept when it is interrupted, for ``--resume``. ``split.json`` names the case folders relative
to the run folder: no file of a run folder holds an absolute path.

Determinism: the shuffling and every augmentation draw are seeded from (seed, epoch, step, index), and checkpoints
are taken at epoch ends, so on CPU an interrupted run resumed with ``--resume`` ends with the same weights bit for bit
(epochs after the last checkpoint are run again; their log rows are dropped first).

Speed: batches are gathered from the cache by a background thread one step ahead, augmented on the device as a
batch, and the step's losses stay on the device until the epoch ends (:mod:`brainuad.train.step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from brainuad.config import Config
from brainuad.data.augmentation import Augmenter
from brainuad.data.datasets import VolumeCache
from brainuad.errors import BrainuadError
from brainuad.io.volumes import load_volume, read_json, write_json
from brainuad.models import build_model, count_parameters
from brainuad.models.base import FitContext
from brainuad.train.batches import gather, plan_batches, to_device
from brainuad.train.checkpoints import (
    load_weights,
    save_weights,
)
from brainuad.train.device import ranks_in_sync
from brainuad.train.epochs import end_epoch, evaluate_loss, out_of_memory, start_loop, train_epoch
from brainuad.train.run import Run, start_run
from brainuad.train.runfolder import (
    append_log,
    write_summary,
)
from brainuad.train.step import learning_rate

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
    """Train a model on preprocessed healthy scans.

    The run goes through its stages in order: :func:`start_run` (split, config, cache, model), then the method's
    kind of training — none (:func:`_finish_without_learning`), the method's own loop, or the default gradient loop
    (:func:`start_loop`, then per epoch :func:`train_epoch` and :func:`end_epoch`) — and :func:`_finish` (the
    learned-nothing check and summary.json).

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
    run = start_run(data, Path(run_dir), config, resume, val_data)
    if not run.method.learns:
        return _finish_without_learning(run)
    if not run.method.resumable and (resume or run.world > 1):
        raise BrainuadError(f"{run.method.name} training runs on one device and cannot be resumed; start a new run")
    outcome = run.method.fit(run.model, _fit_context(run, progress, deadline))
    if outcome is not None:  # the method ran its own loop
        state = {"epoch": outcome.epochs, "best_val_loss": outcome.best_val_loss, "best_epoch": outcome.best_epoch}
        return _finish(run, state, outcome.history, in_sync=None)
    loop = start_loop(run, resume, progress, deadline)
    try:
        for epoch in range(loop.state["epoch"] + 1, run.tc.epochs + 1):
            train_loss, volumes = train_epoch(run, loop, epoch)
            if end_epoch(run, loop, epoch, train_loss, volumes):
                break
    except torch.cuda.OutOfMemoryError as exc:
        raise BrainuadError(out_of_memory(run.tc, "GPU memory")) from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "not enough memory" in str(exc).lower():
            raise BrainuadError(out_of_memory(run.tc, "memory")) from exc
        raise
    finally:
        loop.close()
    return _finish(run, loop.state, loop.history, ranks_in_sync(run.model, run.world), loop.stopped_at_budget)


def _finish_without_learning(run: Run) -> TrainResult:
    """Baselines learn nothing by gradient (the intensity model nothing at all; the normative model its cohort
    statistics, just set): the run folder holds the config, split and weights, so calibrate, detect and evaluate
    treat them like any model."""
    if run.rank == 0:
        save_weights(run.model, run.run_dir / "model.safetensors")
    return _finish(run, {"epoch": 0, "best_val_loss": math.nan, "best_epoch": 0}, [], in_sync=None)


def _finish(
    run: Run, state: dict, history: list[dict], in_sync: bool | None, stopped_at_budget: bool = False
) -> TrainResult:
    """The learned-nothing check on the best weights and summary.json (rank 0), then the process group's end."""
    if run.rank == 0:
        check = _reconstruction_check(run)
        write_summary(run.run_dir, count_parameters(run.model), state, history, run.world, in_sync, check)
        if stopped_at_budget:
            summary = read_json(run.run_dir / "summary.json")
            write_json(run.run_dir / "summary.json", {**summary, "stopped_at_time_budget": True})
    if run.world > 1:
        torch.distributed.barrier()
        run.cache.release()  # every rank stops using it; then each tries to remove it, and one does
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    # Training finished: the copy of the scans goes (a resumed run builds it again; an interrupted one keeps it).
    run.cache.remove()
    return TrainResult(run.run_dir, state["epoch"], state["best_val_loss"], state["best_epoch"], history)


def _fit_context(run: Run, progress: bool, deadline: float | None = None) -> FitContext:
    """What a method with its own loop (:meth:`brainuad.models.base.Method.fit`) may use of the run: the batches as
    the default loop draws them, validation, the log and the run folder's files."""
    tc, device, cache, run_dir = run.tc, run.device, run.cache, run.run_dir
    return FitContext(
        config=run.config,
        device=device,
        train_ids=run.train_ids,
        val_ids=run.val_ids,
        plan=lambda seed, epoch: plan_batches(run.train_ids, tc.batch_size, seed, epoch, 0, 1, tc.steps_per_epoch),
        load=lambda ids, epoch, step: _load_batch(cache, ids, run.augmenter, tc.seed, epoch, step, device),
        raw=lambda ids: _load_batch(cache, ids, None, tc.seed, 0, 0, device),
        learning_rate=lambda step, total: learning_rate(tc, step, total),
        validation_loss=lambda model, brain_only=False: evaluate_loss(
            model, cache, run.val_ids, device, tc.batch_size, None, brain_only
        ),
        log=lambda row: append_log(run_dir / "log.csv", row),
        save=lambda model, name: save_weights(model, run_dir / name),
        record=lambda name, data: write_json(run_dir / name, data),
        progress=progress,
        deadline=deadline,
    )


def _reconstruction_check(run: Run) -> dict:
    """The learned-nothing guard (:mod:`brainuad.train.guard`) on the validation split, with the saved (best)
    weights."""
    from brainuad.train.guard import reconstruction_check

    best = build_model(run.config.model).to(run.device)
    load_weights(best, run.run_dir / "model.safetensors")
    masks = [load_volume(Path(run.cases[i]) / "brain_mask.nii.gz").array > 0.5 for i in run.val_ids]
    return reconstruction_check(
        best, run.cache.array, run.train_ids, run.val_ids, masks, run.device, run.config.model.kind
    )
