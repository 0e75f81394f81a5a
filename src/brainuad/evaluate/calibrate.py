"""``brainuad calibrate``: fit a run's :class:`~brainuad.infer.calibration.Calibration` — on held-out healthy scans (the
threshold at a healthy voxel false-positive rate, and the healthy slice and scan references) or on labelled tuning
cases (the paper's way: the threshold of best pooled Dice) — and save it in the run folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from brainuad.errors import BrainuadError, InputError
from brainuad.infer.calibration import HEALTHY_METHOD, MAP_UNITS, Calibration, SliceReference, write_calibration
from brainuad.infer.inference import MIN_HEALTHY_REFERENCE_SCANS, scan_score
from brainuad.infer.postprocessing import healthy_spread, slice_errors
from brainuad.infer.trained import TrainedModel
from brainuad.io.portable import relative_path, resolve_relative
from brainuad.io.volumes import read_json
from brainuad.preprocess.cases import load_case

LABELLED_METHOD = "best pooled Dice on labelled tuning cases"


def training_overlap(run_dir: str | Path, folders: list[Path]) -> list[str]:
    """Names of ``folders`` that are in the run's training split: the same folder, or a case preprocessed from the
    same raw scan (by its input sha256: recorded in ``split.json``, or read from the training case folders)."""
    return _training_check(run_dir, folders)[0]


def _training_check(run_dir: str | Path, folders: list[Path]) -> tuple[list[str], list[str]]:
    """:func:`training_overlap`, and the training split's entries that could not be checked (neither found from
    here nor recorded with their input sha256: a run folder moved without its data, from an older version)."""
    split_path = Path(run_dir) / "split.json"
    if not split_path.is_file():
        return [], []
    from brainuad.train.runfolder import input_digest, split_identities

    trained_paths, trained_digests, unchecked = split_identities(read_json(split_path), "train", run_dir)
    overlap = [f.name for f in folders if Path(f).resolve() in trained_paths or input_digest(f) in trained_digests]
    return overlap, unchecked


#: The default flagged-volume budget on healthy calibration scans (mL, median over scans).
DEFAULT_MAX_HEALTHY_ML = 1.0
#: The healthy spreads of ``calibrate --normalise-residual`` in a model folder (beside ``calibration.json``).
RESIDUAL_SPREAD_GLOB = "residual_spread-*.safetensors"


def calibrate(
    run_dir: str | Path,
    healthy: list[str | Path] | None = None,
    false_positive_rate: float = 1e-3,
    device: str | torch.device = "cpu",
    allow_training_scans: bool = False,
    max_healthy_ml: float | None = DEFAULT_MAX_HEALTHY_ML,
    normalise_residual: bool = False,
) -> Calibration:
    """Fit the detection threshold and the healthy references on healthy validation scans; save them in the run.

    The threshold is the anomaly value exceeded by ``false_positive_rate`` of brain voxels in healthy scans, raised
    (in steps of 5 %) until the healthy scans' median flagged volume — after the post-processing ``detect`` applies:
    median filter, eroded mask, smallest component — is at most ``max_healthy_ml``: a voxel rate alone lets
    thousands of scattered voxels through as findings on every healthy brain. The
    slice reference is the mean and standard deviation of e(u) per axial slice; the scan scores place a new scan's
    score among healthy ones. Use scans the model was not trained on: by default the run's own validation split
    (``split.json``). Scans the run was trained on are refused unless ``allow_training_scans`` (or the run has no
    held-out scan at all), and then named in the result's ``notes``; with fewer than
    :data:`~brainuad.infer.inference.MIN_HEALTHY_REFERENCE_SCANS` held-out scans the slice reference and scan
    percentiles
    are left out (z-scores come out NaN) and a note says why.

    Args:
        run_dir: Trained model folder.
        healthy: Folders of preprocessed healthy scans; ``None`` = the validation cases in ``RUN_DIR/split.json``.
        false_positive_rate: Fraction of healthy brain voxels above the threshold.
        device: Where to run the network.
        allow_training_scans: Accept healthy scans from the run's training split (an optimistic threshold).
        max_healthy_ml: The flagged-volume budget on healthy scans (mL, median over scans); ``None`` = the voxel
            false-positive rate alone.
        normalise_residual: Divide every anomaly map by the healthy scans' voxel-wise spread
            (:func:`~brainuad.infer.postprocessing.healthy_spread`, saved beside the calibration): places where
            healthy brains always differ from the model's output (edges, ventricles) stop dominating the map. The
            threshold and references are then in those units.

    Returns:
        The calibration written to ``RUN_DIR/calibration.json`` (``calibrated_on`` says what it was fitted on).

    Raises:
        BrainuadError: A built-in model; healthy scans from the model's own training split (a reconstruction model
            fits them too well, so the threshold would come out too low) unless ``allow_training_scans``; scans
            mixing crop grids, template contrasts or modalities.
    """
    from brainuad.data.datasets import check_one_cohort, find_case_folders
    from brainuad.io.shipped import refuse_builtin

    refuse_builtin(run_dir, "calibrate")
    run_dir = Path(run_dir)
    # The earlier calibration is not read: this one replaces it (and a broken one must not block its repair).
    trained = TrainedModel.load(run_dir, device, calibration=False)
    config = trained.config
    split_path = run_dir / "split.json"
    split = read_json(split_path) if split_path.is_file() else None
    if healthy is None:
        if split is None or not split.get("val"):
            raise InputError(split_path, "no validation split recorded: pass the healthy scans to calibrate on")
        from brainuad.train.runfolder import split_folders

        healthy, origin = list(split_folders(split, "val", run_dir)), "the run's validation split"
        missing = [str(p) for p in healthy if not p.is_dir()]
        if missing:
            raise InputError(
                split_path,
                f"{len(missing)} validation case folder(s) are not found from here (e.g. {missing[0]}): the run "
                "folder was moved without its data — move it back beside them, or pass the healthy scans "
                "to calibrate on",
            )
    else:
        origin = "the healthy scans given"
    folders = find_case_folders(list(healthy))
    check_one_cohort(folders, "--healthy")
    # The run's own training scans (the same folder, or the same raw scan preprocessed again) are refused: a model
    # reconstructs them too well and the threshold comes out too low. Accepted when asked, or when the run has no
    # held-out scan at all (one healthy case: its split says so), and then named in the notes.
    no_held_out = bool((split or {}).get("note")) and sorted((split or {}).get("val", [])) == sorted(
        (split or {}).get("train", [])
    )
    from brainuad.models.base import get_method

    shaped_by_training = get_method(config.model.kind).uses_training_data
    in_training, unchecked = _training_check(run_dir, folders) if shaped_by_training else ([], [])
    if unchecked:
        # Not passed over in silence: these training scans could be among the calibration scans.
        unchecked_note = (
            f"{len(unchecked)} of the run's training scans could not be checked against the calibration scans "
            f"(not found from here, e.g. {unchecked[0]}, and no input sha256 in split.json: the run folder was "
            "moved without its data?): the calibration scans may include training scans"
        )
        warnings.warn(unchecked_note, stacklevel=2)
    if in_training and not (allow_training_scans or (origin == "the run's validation split" and no_held_out)):
        shown = ", ".join(in_training[:5]) + (f" (+{len(in_training) - 5} more)" if len(in_training) > 5 else "")
        raise BrainuadError(
            f"{len(in_training)} of the healthy scans were in the model's training split ({shown}): a model "
            "reconstructs its training scans too well, so the threshold would be too low. Calibrate on held-out "
            "scans (the run's validation split), or pass --allow-training-scans to accept it"
        )
    held_out = len(folders) - len(in_training)
    values, errors, scores, ratios, maps, brains = [], [], [], [], [], []
    for folder in folders:
        case = load_case(folder)
        if case.grid.shape != tuple(config.model.input_shape):
            raise InputError(
                folder,
                f"crop grid {case.grid.shape} ({case.grid.spacing_mm:g} mm) does not match the model's "
                f"{tuple(config.model.input_shape)}; preprocess the healthy scans with the model's preset "
                f"({config.preprocessing.preset})",
            )
        analysis = trained.analyse(case)
        values.append(analysis.anomaly[case.brain_mask.array])
        maps.append(analysis.anomaly.astype(np.float16))  # for the flagged volumes: half the memory, ~3 digits
        brains.append(case.brain_mask.array)
        errors.append(analysis.slice_errors)
        scores.append(analysis.scan_score)
        ratios.append(case.record.get("qc", {}).get("csf_to_white_matter"))
    spread = None
    if normalise_residual:
        # From the float16 maps: the spread needs no more digits; the normalised values are computed in float32.
        spread = healthy_spread(maps, brains)
        normalised = [m.astype(np.float32) / spread for m in maps]
        values = [m[b] for m, b in zip(normalised, brains)]
        errors = [slice_errors(m) for m in normalised]
        scores = [scan_score(m, b) for m, b in zip(normalised, brains)]
        maps = normalised
    if len({e.size for e in errors}) != 1:
        raise InputError(None, "healthy scans lie on different crop grids; preprocess them with one preset")
    pooled = np.concatenate(values)
    stack = np.stack(errors)
    notes = [unchecked_note] if unchecked else []
    if in_training:
        notes.append(
            f"{len(in_training)} of the {len(folders)} calibration scans were used in training "
            f"({', '.join(in_training)}): the threshold is optimistic, not a held-out estimate"
        )
    references = held_out >= MIN_HEALTHY_REFERENCE_SCANS
    if not references:
        notes.append(
            f"{held_out} held-out healthy scan(s), fewer than {MIN_HEALTHY_REFERENCE_SCANS}: no healthy slice "
            "reference (calibrated z-scores are NaN) and no scan percentile"
        )
    reference = SliceReference(tuple(stack.mean(0).tolist()), tuple(stack.std(0).tolist()))
    threshold = float(np.quantile(pooled, 1.0 - false_positive_rate))
    threshold, flagged = _within_healthy_budget(maps, threshold, analysis.sizes, case.grid.voxel_ml, max_healthy_ml)
    if max_healthy_ml is not None:
        notes.append(
            f"threshold raised to keep the healthy scans' median flagged volume <= {max_healthy_ml:g} mL "
            f"(median {float(np.median(flagged)):.3g} mL, max {max(flagged):.3g} mL)"
        )
    calibration = Calibration(
        method=HEALTHY_METHOD,
        false_positive_rate=false_positive_rate,
        threshold=threshold,
        calibrated_on=f"{len(folders)} healthy scans ({origin}; {held_out} held out from training)",
        healthy_cases=tuple(relative_path(f, run_dir) for f in folders),  # relative: no path of this machine
        held_out_healthy_scans=held_out,
        notes=tuple(notes),
        slice_errors=reference if references else None,
        healthy_scan_scores=tuple(float(s) for s in scores) if references else (),
        # The healthy scans' contrast, to warn when detect is given another one (a T1 scan to a T2 model).
        csf_to_white_matter=contrast_reference(ratios),
        # One preset for all cases (slice counts checked above), so the last case's sizes stand for them all.
        postprocessing=analysis.sizes,
        max_healthy_ml=max_healthy_ml,
        healthy_flagged_ml=tuple(round(v, 4) for v in flagged),
        map_units=MAP_UNITS[1] if spread is not None else MAP_UNITS[0],
    )
    if spread is not None:
        # Named by its content and written before the calibration that names it; the earlier spread is removed only
        # after: a failure anywhere leaves the earlier calibration and its file as they were.
        digest = _save_spread(run_dir, spread)
        calibration = dataclasses.replace(
            calibration, residual_spread=spread_file_name(digest), residual_spread_sha256=digest
        )
    write_calibration(run_dir, calibration)
    for stale in run_dir.glob(RESIDUAL_SPREAD_GLOB):
        if stale.name != calibration.residual_spread:
            stale.unlink(missing_ok=True)
    return calibration


def spread_file_name(digest: str) -> str:
    """The file name of a healthy spread with SHA-256 ``digest`` (named by content: a new one never overwrites the
    one an existing calibration names)."""
    return f"residual_spread-{digest[:12]}.safetensors"


def _save_spread(run_dir: Path, spread: np.ndarray) -> str:
    """Write the healthy spread as safetensors into ``run_dir`` (atomically); returns its SHA-256."""
    import hashlib

    from safetensors.numpy import save

    from brainuad.io.files import atomic_path

    data = save({"spread": np.ascontiguousarray(spread, np.float32)})
    digest = hashlib.sha256(data).hexdigest()
    with atomic_path(run_dir / spread_file_name(digest)) as tmp:
        tmp.write_bytes(data)
    return digest


def _within_healthy_budget(
    maps: list[np.ndarray], threshold: float, sizes, voxel_ml: float, budget_ml: float | None
) -> tuple[float, list[float]]:
    """The lowest threshold from ``threshold`` up (×1.05 a step) whose median flagged volume over the healthy
    ``maps`` is within ``budget_ml`` (``None``: ``threshold`` as it is), and each map's flagged volume there."""
    from brainuad.infer.postprocessing import segment

    def flagged_ml(t: float) -> list[float]:
        return [float((segment(m.astype(np.float32), t, sizes.min_component_voxels)[0] > 0).sum()) * voxel_ml
                for m in maps]  # fmt: skip

    volumes = flagged_ml(threshold)
    ceiling = max(float(m.max()) for m in maps)
    while budget_ml is not None and float(np.median(volumes)) > budget_ml and threshold < ceiling:
        threshold *= 1.05
        volumes = flagged_ml(threshold)
    return threshold, volumes


def _labelled_evaluations(trained: TrainedModel, cases: list, cache_dir: str | Path | None, progress: bool):
    """Each labelled case's evaluation (map, lesion, sizes), one at a time, preprocessed into ``cache_dir`` (a
    temporary folder, removed at the end, when ``None``)."""
    from tqdm import tqdm

    from brainuad.evaluate.labelled import evaluate_case

    temporary = None if cache_dir else tempfile.TemporaryDirectory(prefix="brainuad-calibrate-")
    cache = Path(cache_dir) if cache_dir else Path(temporary.name)
    try:
        for case in tqdm(cases, desc="calibrate", unit="case", disable=not progress):
            yield evaluate_case(trained, case, cache)
    finally:
        if temporary is not None:
            temporary.cleanup()


def calibrate_on_labelled(
    run_dir: str | Path,
    sources: list[str | Path],
    modality: str = "t2",
    cache_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> Calibration:
    """Fit the threshold the paper's way: best pooled Dice on labelled tuning cases; saved in ``calibration.json``.

    Healthy references already in the calibration (slice errors, scan scores) are kept. Never tune on the cases you
    will report.

    Raises:
        BrainuadError: A built-in model, tuning cases without voxel labels, unusable cases.
    """

    from brainuad.data.datasets import find_labelled_cases
    from brainuad.evaluate.labelled import apply_threshold, tune_threshold
    from brainuad.evaluate.scores import default_slice_score
    from brainuad.io.provenance import sha256_file
    from brainuad.io.shipped import refuse_builtin

    refuse_builtin(run_dir, "calibrate")
    run_dir = Path(run_dir)
    trained = TrainedModel.load(run_dir, device)
    cases = [c for source in sources for c in find_labelled_cases(source, modality)]
    evaluations = list(_labelled_evaluations(trained, cases, cache_dir, progress))
    sweep = tune_threshold(evaluations)
    for evaluation in evaluations:
        apply_threshold(evaluation, sweep.threshold)
    slice_score, choice = default_slice_score(evaluations, None)
    fitted = {
        "method": LABELLED_METHOD,
        "threshold": sweep.threshold,
        "slice_score": slice_score,
        "slice_score_tuning_ap": choice.get("tuning_ap"),
        "tuning_dice": sweep.dice,
        "tuning_cases": tuple(relative_path(c.image_path, run_dir) for c in cases),
        "tuning_cases_sha256": tuple(sha256_file(c.image_path) for c in cases),
        "postprocessing": evaluations[0].sizes,
        # An extent level chosen below the earlier threshold means nothing at this one: chosen again or not at all.
        "extent_threshold": None,
        "extent_method": None,
        "extent_tuning_dice": None,
        "extent_tuning_cases": None,
        "extent_tuning_cases_sha256": None,
    }
    # A healthy calibration's references are kept; the threshold and its provenance are replaced.
    earlier = trained.calibration
    calibration = dataclasses.replace(earlier, **fitted) if earlier is not None else Calibration(**fitted)
    write_calibration(run_dir, calibration)
    return calibration


def contrast_reference(ratios: list[float | None]) -> float | None:
    """The healthy scans' contrast, for detect's contrast check: the median of their CSF / white-matter intensity
    ratios (each case record's ``qc.csf_to_white_matter``); ``None`` when none is known (cases preprocessed before the
    ratio was recorded)."""
    known = [v for v in ratios if v is not None]
    return float(np.median(known)) if known else None


#: The extent levels tried, as fractions of the calibrated threshold (geometric: maps span decades).
EXTENT_FRACTIONS = tuple(float(f) for f in np.geomspace(0.05, 1.0, 28))
EXTENT_METHOD = "best pooled Dice of hysteresis below the calibrated threshold on labelled tuning cases"


def calibrate_extent(
    run_dir: str | Path,
    sources: list[str | Path],
    modality: str = "t2",
    cache_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    healthy: list[str | Path] | None = None,
    max_healthy_ml: float = 1.0,
) -> Calibration:
    """Choose the extent level of hysteresis delineation on labelled tuning cases, keeping the calibrated threshold.

    The calibrated threshold (a healthy calibration's, say) stays the strict level that decides *where* a finding
    is; the extent level decides *how far* it reaches: the level among :data:`EXTENT_FRACTIONS` × threshold whose
    delineation has the best pooled Dice on the tuning cases. Saved in ``calibration.json`` with the tuning cases'
    names and hashes (evaluate refuses to report on them). Never tune on the cases you will report.

    Raises:
        BrainuadError: A built-in model, a model with no calibration, tuning cases without voxel labels.
    """

    from brainuad.data.datasets import find_labelled_cases
    from brainuad.infer.postprocessing import segment
    from brainuad.io.provenance import sha256_file
    from brainuad.io.shipped import refuse_builtin

    refuse_builtin(run_dir, "calibrate")
    run_dir = Path(run_dir)
    trained = TrainedModel.load(run_dir, device)
    if trained.calibration is None:
        raise BrainuadError(f"{run_dir}: not calibrated: run 'brainuad calibrate --healthy DIR' first (the extent "
                            "level is chosen below the calibrated threshold)")  # fmt: skip
    strict = trained.calibration.threshold
    cases = [c for source in sources for c in find_labelled_cases(source, modality)]
    overlap = np.zeros(len(EXTENT_FRACTIONS))
    total = np.zeros(len(EXTENT_FRACTIONS))
    # One case's map at a time (the levels are scored as each case comes), not every case's at once.
    for case, evaluation in zip(cases, _labelled_evaluations(trained, cases, cache_dir, progress)):
        if not evaluation.has_voxels:
            raise BrainuadError(f"{case.image_path}: no voxel labels; the extent level needs them")
        lesion = evaluation.lesion > 0
        minimum = evaluation.sizes.min_component_voxels
        for i, fraction in enumerate(EXTENT_FRACTIONS):
            predicted = segment(evaluation.anomaly, strict, minimum, strict * fraction)[0] > 0
            overlap[i] += 2 * np.logical_and(predicted, lesion).sum()
            total[i] += predicted.sum() + lesion.sum()
    dice = np.where(total > 0, overlap / np.maximum(total, 1), 0.0)
    folders = [Path(h) for h in healthy] if healthy else [
        resolve_relative(h, run_dir) for h in trained.calibration.healthy_cases or ()
    ]
    folders = [f for f in folders if (f / "image.nii.gz").is_file()]
    checked = "; not checked on healthy scans (none found)"
    if folders:
        flagged = _healthy_flagged_by_level(trained, folders, strict)
        budget = max(max_healthy_ml, flagged[-1])  # the last fraction is 1.0: the strict threshold alone
        dice = np.where(flagged <= budget + 1e-9, dice, -1.0)
        checked = f"; healthy median flagged volume <= {budget:.3g} mL on {len(folders)} healthy scans"
    best = len(dice) - 1 - int(np.argmax(dice[::-1]))  # ties: the highest (strictest) level
    calibration = dataclasses.replace(
        trained.calibration,
        extent_threshold=strict * EXTENT_FRACTIONS[best],
        extent_method=f"{EXTENT_METHOD} ({EXTENT_FRACTIONS[best]:.3f} × the threshold{checked})",
        extent_tuning_dice=float(dice[best]),
        extent_tuning_cases=tuple(c.name for c in cases),
        extent_tuning_cases_sha256=tuple(sha256_file(c.image_path) for c in cases),
    )
    write_calibration(run_dir, calibration)
    return calibration


def _healthy_flagged_by_level(trained: TrainedModel, folders: list[Path], strict: float) -> np.ndarray:
    """The median over healthy case folders of the flagged volume (mL) at each extent level of
    :data:`EXTENT_FRACTIONS` × ``strict``."""
    from brainuad.infer.postprocessing import segment

    volumes = []
    for folder in folders:
        case = load_case(folder)
        analysis = trained.analyse(case)
        minimum = analysis.sizes.min_component_voxels
        volumes.append([
            float((segment(analysis.anomaly, strict, minimum, strict * f)[0] > 0).sum()) * case.grid.voxel_ml
            for f in EXTENT_FRACTIONS
        ])  # fmt: skip
    return np.median(np.asarray(volumes), axis=0)
