"""The paper's preprocessing, made robust: skull strip → register to MNI → crop → scale; and the way back.

Each scan becomes a case folder (:mod:`brainuad.preprocess.cases` describes its files). Folders are built under a
temporary
name and renamed into place when complete, so an interrupted batch never leaves a half-written case that a re-run
would trust. :class:`PreprocessedCase`, :func:`save_case`, :func:`load_case` and :func:`case_names` live in
:mod:`brainuad.preprocess.cases` and are re-exported here.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainuad.config import PreprocessConfig, from_dict, to_dict
from brainuad.errors import BrainuadError, InputError, warning_formatter
from brainuad.io.files import output_folder
from brainuad.io.provenance import provenance, sha256_file
from brainuad.io.shards import Shard
from brainuad.io.volumes import (
    Volume,
    check_replaceable,
    find_nifti_files,
    load_volume,
    read_json,
    safe_name,
    strip_nifti_suffix,
)
from brainuad.preprocess.cases import (
    LEGACY_CASE_FILES,
    PreprocessedCase,
    case_names,
    is_case_folder,
    load_case,
    save_case,
)
from brainuad.preprocess.qc import (
    check_memory,
    csf_to_white_matter,
    qc_warnings,
    refuse_label_maps,
    refuse_noise,
)
from brainuad.preprocess.registration import (
    estimate_transform,
    fraction_outside_grid,
    native_to_mni,
    registration_overlap,
)
from brainuad.preprocess.skullstrip import MAX_BRAIN_VOLUME_ML, skull_strip
from brainuad.preprocess.templates import crop_grid

__all__ = [  # with the case format's names, re-exported from brainuad.preprocess.cases
    "LEGACY_CASE_FILES",
    "MIN_REGISTRATION_INSIDE",
    "RECORD_VERSION",
    "THICK_SLICE_MM",
    "BatchResult",
    "DegradedInputWarning",
    "PreprocessedCase",
    "case_names",
    "degraded_input_warnings",
    "intensity_range",
    "load_case",
    "preprocess_batch",
    "preprocess_file",
    "preprocess_volume",
    "save_case",
    "scale_intensity",
]

RECORD_VERSION = 1
#: Registration has failed when less than this fraction of the brain lands inside the (dilated) template mask.
MIN_REGISTRATION_INSIDE = 0.85


def intensity_range(
    values: np.ndarray, method: str = "percentile", percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[float, float]:
    """The intensities that scaling maps to 0 and 1, from the brain's voxel values.

    ``percentile`` takes the given percentiles, so a few extreme voxels (one BraTS scan here has values of 32767) do
    not squash the brain into a narrow band; ``minmax`` is the paper's per-volume min–max.
    """
    if values.size == 0:
        raise ValueError("empty brain mask: nothing to scale")
    if method == "percentile":
        low, high = (float(v) for v in np.percentile(values, percentiles))
    elif method == "minmax":
        low, high = float(values.min()), float(values.max())
    else:
        raise ValueError(f"unknown scaling {method!r}")
    if high <= low:
        raise ValueError(f"brain intensities are constant ({low:g}); cannot scale")
    return low, high


def scale_intensity(array: np.ndarray, mask: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low``…``high`` to 0…1 (clipped) inside ``mask``; zero outside."""
    scaled = np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)
    scaled[~mask] = 0.0
    return scaled


class DegradedInputWarning(UserWarning):
    """The scan is usable, but the result will be worse than usual (the message says why)."""


#: Slices thicker than this lose detail the 1 mm crop cannot restore (clinical 2D scans: 5–7 mm).
THICK_SLICE_MM = 3.0


def degraded_input_warnings(volume: Volume) -> list[str]:
    """What about a usable scan will degrade its result (thick slices, few slices), in words."""
    found = []
    thickest = max(volume.spacing)
    if thickest > THICK_SLICE_MM:
        found.append(
            f"voxels are {thickest:.1f} mm along one axis (thick slices): the crop interpolates between slices, "
            f"so lesions thinner than that may be missed and slice scores are smoother"
        )
    if min(volume.shape) < 24:
        found.append(f"only {min(volume.shape)} slices along one axis: little through-plane coverage")
    return found


def preprocess_volume(
    volume: Volume, config: PreprocessConfig | None = None, name: str | None = None
) -> PreprocessedCase:
    """Run the whole preprocessing on one loaded scan.

    Args:
        volume: Raw scan (any orientation; RAS+ order as :func:`brainuad.io.volumes.load_volume` returns it).
        config: Preprocessing settings (defaults: the paper's crop, robust scaling, automatic skull stripping).
        name: Case name stored in the record.

    Returns:
        The preprocessed case.

    Raises:
        InputError: No brain found, or registration failed its overlap check.
    """
    config = config or PreprocessConfig()
    grid = crop_grid(config.preset)
    timings: dict[str, float] = {}
    offset = min(0.0, float(volume.array.min()))
    if offset < 0:
        # MRI magnitudes are >= 0: a negative offset (some converters subtract 1000) is undone, so that skull
        # stripping and registration see a zero background and the scaled image is the same as without it.
        volume = volume.with_array(volume.array - np.float32(offset))

    start = time.perf_counter()
    refuse_label_maps(volume)  # before skull stripping, which fails on a label map in its own words
    mask_native, method = skull_strip(volume, config.skull_strip)
    refuse_noise(volume, mask_native)
    timings["skull_strip_s"] = time.perf_counter() - start

    start = time.perf_counter()
    brain = volume.with_array(np.where(mask_native, volume.array, 0.0).astype(np.float32))
    # Registering at the crop's own resolution (2 mm for paper-2mm) is much faster and the crop keeps no finer detail.
    template_spacing = max(1, round(float(np.linalg.norm(grid.affine_array[:3, 0]))))
    transform = estimate_transform(
        brain,
        config.registration,
        config.template_contrast,
        config.registration_seed,
        template_spacing=template_spacing,
    )
    timings["registration_s"] = time.perf_counter() - start

    start = time.perf_counter()
    overlap = registration_overlap(mask_native, transform)
    if overlap["inside"] < MIN_REGISTRATION_INSIDE:
        mask_ml = float(mask_native.sum() * volume.voxel_volume_ml)
        cause = (
            f"the brain mask holds {mask_ml:.0f} mL, more than any brain ({MAX_BRAIN_VOLUME_ML:.0f} mL): the skull "
            "seems to be still there — use --skull-strip auto or deepbet, not none"
            if mask_ml > MAX_BRAIN_VOLUME_ML
            else "check the scan's orientation header"
        )
        raise InputError(
            volume.path,
            f"registration to MNI failed its check (only {overlap['inside']:.0%} of the brain lands inside the "
            f"template's brain, need {MIN_REGISTRATION_INSIDE:.0%}); {cause}",
        )
    image_mni = native_to_mni(brain.array, transform, grid, order=1)
    mask_mni = native_to_mni(mask_native.astype(np.float32), transform, grid, order=1) > 0.5
    # The range comes from the whole native brain, so the scale does not depend on what the crop keeps.
    try:
        low, high = intensity_range(volume.array[mask_native], config.scaling, config.percentiles)
    except ValueError as exc:
        raise InputError(volume.path, f"{exc} (is this a scan?)") from exc
    scaled = scale_intensity(image_mni, mask_mni, low, high)
    timings["resample_scale_s"] = time.perf_counter() - start

    brain_ml = float(mask_native.sum() * volume.voxel_volume_ml)
    contrast = csf_to_white_matter(scaled, mask_mni, grid)
    p5, median, p95 = np.percentile(volume.array[mask_native], [5, 50, 95])
    spread = float((p95 - p5) / median) if median > 0 else None
    warnings_found = degraded_input_warnings(volume) + qc_warnings(brain_ml, overlap["dice"], spread)
    for message in warnings_found:
        warnings.warn(f"{volume.path or 'volume'}: {message}", DegradedInputWarning, stacklevel=2)
    grid_affine = grid.affine_array
    record = {
        "warnings": warnings_found,
        "record_version": RECORD_VERSION,
        "name": name or (strip_nifti_suffix(volume.path) if volume.path else "case"),
        "input": {
            "path": str(volume.path) if volume.path else None,
            "sha256": sha256_file(volume.path) if volume.path else None,
            "shape": list(volume.shape),
            "spacing_mm": list(volume.spacing),
            "axcodes": list(volume.source_axcodes),
        },
        "preprocessing": to_dict(config),
        "skull_strip_method": method,
        "template": f"MNI ICBM152 2009a symmetric ({config.template_contrast} contrast, nilearn)",
        "template_spacing_mm": template_spacing,
        "grid": grid.to_dict(),
        "intensity_range": [low + offset, high + offset],  # in the input's own units
        "qc": {
            "brain_volume_ml": brain_ml,
            "registration_mask_dice": overlap["dice"],
            "registration_inside_template": overlap["inside"],
            "brain_fraction_outside_crop": fraction_outside_grid(mask_native, transform, grid),
            "csf_to_white_matter": contrast,
            "intensity_spread": spread,
        },
        "timings": timings,
        "provenance": provenance(),
    }
    return PreprocessedCase(
        name=record["name"],
        image=Volume(scaled, grid_affine),
        brain_mask=Volume(mask_mni, grid_affine),
        transform=transform,
        grid=grid,
        record=record,
        brain_mask_native=transform.native_grid_volume(mask_native),
    )


def _already_done(folder: Path, input_path: Path, config: PreprocessConfig) -> bool:
    if not is_case_folder(folder):
        return False
    try:
        record = read_json(folder / "record.json")
        same_config = from_dict(PreprocessConfig, record["preprocessing"]) == config
        return same_config and record["input"]["sha256"] == sha256_file(input_path)
    except (BrainuadError, KeyError, TypeError):
        return False


def preprocess_file(
    path: str | Path,
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    name: str | None = None,
    force: bool = False,
    orientation: str | None = None,
) -> tuple[str, Path]:
    """Preprocess one NIfTI file into ``out_dir/<name>/``.

    Returns:
        ``("done" | "skipped", case_folder)``; ``skipped`` when an identical case (same input hash and settings)
        is already complete there.
    """
    path = Path(path)
    config = config or PreprocessConfig()
    name = safe_name(name or strip_nifti_suffix(path))
    folder = Path(out_dir) / name
    if not force and _already_done(folder, path, config):
        return "skipped", folder
    check_replaceable(folder, LEGACY_CASE_FILES)  # before the work: a user's folder of that name is never replaced
    check_memory(path)
    volume = load_volume(path, "image", orientation=orientation)
    case = preprocess_volume(volume, config, name=name)
    save_case(case, folder)
    return "done", folder


@dataclass
class BatchResult:
    """Outcome of a batch: folders done or skipped, and the failures with their messages."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _worker_init(command: str | None = None) -> None:
    """In each worker: SIGTERM removes the case folder being built and ends the process at once; warnings read as
    the parent's (``command``: the CLI verb whose formatter the parent had, if any; spawned or forkserver workers
    do not inherit it)."""
    import signal

    from brainuad.io.volumes import remove_staging_folders

    if command is not None:
        warnings.formatwarning = warning_formatter(command)

    def stop(signum, frame):
        remove_staging_folders()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the workers of an interrupted batch now (they hold the caller's stdout open and would run on)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown(), which forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)  # a worker inside a long C call (registration) handles the signal only after it
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _worker(args: tuple[Path, Path, PreprocessConfig, str, bool, str | None, int]) -> tuple[str, Path]:
    path, out_dir, config, name, force, orientation, threads = args
    import torch

    torch.set_num_threads(threads)  # registration runs on one ITK thread for reproducibility (registration.py)
    return preprocess_file(path, out_dir, config, name=name, force=force, orientation=orientation)


def preprocess_batch(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    config: PreprocessConfig | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    shard: Shard | None = None,
    orientation: str | None = None,
) -> BatchResult:
    """Preprocess files and folders; finished cases are skipped and one failure does not stop the rest.

    Args:
        inputs: NIfTI files and/or folders (searched recursively).
        out_dir: Where case folders go.
        config: Preprocessing settings.
        jobs: Parallel worker processes (each gets an equal share of the CPU threads).
        force: Redo cases even when already complete.
        progress: Show a progress bar.
        shard: Do only this shard of the scans (:mod:`brainuad.io.shards`; names are decided on all of them).
        orientation: The voxel orientation of scans whose header has none (refused without it).
    """
    from tqdm import tqdm

    config = config or PreprocessConfig()
    out_dir = Path(out_dir)
    paths = find_nifti_files(list(inputs))
    names = case_names(paths)
    if shard is not None:
        paths = shard.take(names)
    # Fails before any work, naming the folder; a refused run leaves no empty folder behind.
    with output_folder(out_dir):
        _remove_stale_partials(out_dir)
        result = BatchResult()
        threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
        tasks = [(p, out_dir, config, names[p], force, orientation, threads) for p in paths]
        bar = tqdm(total=len(tasks), desc="preprocess", unit="scan", disable=not progress)

        def record(path: Path, outcome: tuple[str, Path] | BaseException) -> None:
            if isinstance(outcome, BaseException):
                result.failed.append((path, str(outcome)))
                bar.write(f"FAILED {outcome}")
            else:
                (result.done if outcome[0] == "done" else result.skipped).append(outcome[1])
            bar.update(1)

        if jobs <= 1:
            for task in tasks:
                try:
                    record(task[0], preprocess_file(*task[:6]))
                except BrainuadError as exc:
                    record(task[0], exc)
                except Exception as exc:  # keep the batch going; report the unexpected error with its file
                    record(task[0], InputError(task[0], f"unexpected {type(exc).__name__}: {exc}"))
        else:
            started = time.time() - 1.0
            command = getattr(warnings.formatwarning, "brainuad_command", None)
            pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init, initargs=(command,))
            try:
                futures = {pool.submit(_worker, task): task[0] for task in tasks}
                for future in as_completed(futures):
                    path = futures[future]
                    try:
                        record(path, future.result())
                    except BrainuadError as exc:
                        record(path, exc)
                    except Exception as exc:
                        record(path, InputError(path, f"unexpected {type(exc).__name__}: {exc}"))
            except BaseException:  # Ctrl-C, SIGTERM (the CLI turns it into KeyboardInterrupt)
                _stop_workers(pool)
                # A killed worker could not remove its staging folder: remove those of this batch's cases.
                for name in set(names.values()):
                    for partial in out_dir.glob(f".{name}.partial-*"):
                        if partial.stat().st_mtime >= started:
                            shutil.rmtree(partial, ignore_errors=True)
                raise
            pool.shutdown()
        bar.close()
        return result


def _remove_stale_partials(out_dir: Path, min_age_s: float = 3600.0) -> None:
    """Delete staging folders left by killed runs (only old ones: another process may be writing a new one)."""
    now = time.time()
    for partial in out_dir.glob(".*.partial-*"):
        try:
            if partial.is_dir() and now - partial.stat().st_mtime > min_age_s:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass
