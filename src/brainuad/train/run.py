"""The first stage of a training run: the split, the config built for the data, the run folder's first files, the
volume cache and the prepared model — everything the later stages read, gathered in one :class:`Run`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from brainuad.config import Config, PreprocessConfig, TrainConfig, from_dict, replace
from brainuad.data.augmentation import Augmenter
from brainuad.data.datasets import VolumeCache, check_cache_folder, check_one_cohort, find_case_folders
from brainuad.io.provenance import provenance
from brainuad.io.volumes import ensure_writable_folder, read_grid, read_json, write_json
from brainuad.models import build_model
from brainuad.models.base import Method, get_method
from brainuad.train.checkpoints import (
    load_config,
    save_config,
)
from brainuad.train.device import distributed, resolve_device
from brainuad.train.runfolder import (
    absolute_split,
    lock_run_folder,
    portable_split,
    prepare_run,
)


@dataclass
class Run:
    """What every stage of a run reads, set once by :func:`start_run`.

    Attributes:
        config: The whole config tree (the model built for the data's crop grid).
        run_dir: The run folder.
        rank: This process's rank; ``world`` the number of processes (1 without torchrun).
        cache: The training and validation volumes, memory-mapped.
        cases: Case folders in cache order; ``train_ids`` and ``val_ids`` are rows of the cache.
        device: Where the model lives.
        augmenter: The batched augmentation, or ``None``.
        method: The registered method; ``model`` its network, built and prepared (cohort statistics).
    """

    config: Config
    run_dir: Path
    rank: int
    world: int
    cache: VolumeCache
    cases: list[str]
    train_ids: list[int]
    val_ids: list[int]
    device: torch.device
    augmenter: Augmenter | None
    method: Method
    model: nn.Module

    @property
    def tc(self) -> TrainConfig:
        return self.config.training


def start_run(
    data: list[str | Path], run_dir: Path, config: Config | None, resume: bool, val_data: list[str | Path] | None
) -> Run:
    """The split, the config (built for the data's crop grid), the run folder's first files, the volume cache and
    the model, prepared with the training cohort's statistics."""
    given = config
    config = config or Config()
    rank, world = distributed()
    case_folders = find_case_folders(list(data))
    val_folders = find_case_folders(list(val_data)) if val_data else []
    check_one_cohort(case_folders + val_folders, "--data" + (" and --val-data" if val_folders else ""))
    if rank == 0:
        check_cache_folder()  # an unusable cache folder fails the run before its folder is made
        ensure_writable_folder(run_dir)
        lock_run_folder(run_dir)  # held until the process ends
        config, split = prepare_run(case_folders, run_dir, config, resume, given, val_folders)
    elif resume:
        config, split = prepare_run(case_folders, run_dir, config, resume, given, val_folders)
    else:
        # Rank 0 draws the split and writes config.json first; another rank calling prepare_run could find that
        # file already written and refuse the folder as "already holds a run".
        torch.distributed.barrier()
        config, split = load_config(run_dir / "config.json"), absolute_split(read_json(run_dir / "split.json"), run_dir)
    cases = sorted(set(split["train"]) | set(split["val"]))
    if not resume:
        # The model is built for the data's crop, and detection must preprocess new scans the same way.
        record = read_json(Path(cases[0]) / "record.json")
        if "preprocessing" in record:
            config = replace(config, preprocessing=from_dict(PreprocessConfig, record["preprocessing"]))
        shape, _ = read_grid(Path(cases[0]) / "image.nii.gz")
        config = replace(config, model=replace(config.model, input_shape=shape))
    tc = config.training
    augment = tc.augment == "on" or (tc.augment == "auto" and len(set(split["train"])) < tc.augment_below)
    augmenter = Augmenter() if augment else None
    if rank == 0 and not resume:
        # Written before the cache: a run that fails while caching (disk full) can be resumed.
        save_config(config, run_dir / "config.json")
        write_json(run_dir / "split.json", portable_split(split, run_dir))
        write_json(
            run_dir / "provenance.json",
            {**provenance(), "augmentation": augmenter.description if augmenter else "off", "world_size": world},
        )
        if world > 1:
            torch.distributed.barrier()  # the other ranks read config.json and split.json now
    cache = open_cache(cases, rank, world)
    position = {p: i for i, p in enumerate(cases)}
    device = resolve_device(tc.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    torch.manual_seed(tc.seed)
    method = get_method(config.model.kind)
    model = build_model(config.model).to(device)
    train_ids = [position[p] for p in split["train"]]
    method.prepare(model, cache.array, train_ids)
    return Run(
        config, run_dir, rank, world, cache, cases, train_ids, [position[p] for p in split["val"]], device,
        augmenter, method, model,
    )  # fmt: skip


def open_cache(cases: list[str], rank: int, world: int) -> VolumeCache:
    """The volume cache (outside the run folder, keyed by the cases' contents: :class:`VolumeCache`), written by
    rank 0 and then opened by the others."""
    cache = VolumeCache([Path(p) for p in cases]) if rank == 0 else None
    if world > 1:
        torch.distributed.barrier()
    return cache or VolumeCache([Path(p) for p in cases])
