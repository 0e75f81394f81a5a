"""A run's calibration — the operating threshold and the healthy references, saved as ``calibration.json`` beside the
weights — as one typed, validated record.

This module owns the file: :func:`read_calibration` is its one reader and :func:`write_calibration` its one writer
(which never writes into a shipped model). :mod:`brainuad.evaluate.calibrate` fits calibrations; everything else
reads them
through :class:`brainuad.infer.trained.TrainedModel`.

A calibration fitted on healthy scans holds the threshold at a healthy voxel false-positive rate, the healthy slice
reference (mean and spread of e(u) per axial slice) and the healthy scans' scan scores; one fitted on labelled
tuning cases holds the best-pooled-Dice threshold, the chosen slice score and the tuning cases (by path and content).
A labelled calibration of a run calibrated on healthy scans keeps the healthy references. Files written by older
brainuad versions (fewer keys) load; keys this version does not know are kept and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainuad.errors import BrainuadError, InputError
from brainuad.infer.postprocessing import PostprocessingSizes

CALIBRATION_FILE = "calibration.json"
#: Keys a healthy calibration writes even when empty (``null``): no slice reference, no contrast measured.
_HEALTHY_NULLABLE = ("slice_errors", "csf_to_white_matter")


@dataclass(frozen=True)
class SliceReference:
    """Healthy scans' slice errors e(u): mean and standard deviation per axial slice of the crop grid."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


#: How a healthy calibration's threshold is fitted (``calibration.json``'s ``method``).
HEALTHY_METHOD = "healthy voxel false-positive rate"
#: The largest threshold a calibration can produce: anomaly maps are residuals of scans scaled to 0…1, or those
#: divided by a healthy spread floored at a quarter of its median (a small spread makes large units); 1e8 is far
#: above either, and still refuses what would flag nothing (1e300).
MAX_THRESHOLD = 1e8
#: What a calibration's threshold is measured in (``map_units``).
MAP_UNITS = ("residual", "residual / healthy spread")


def check_threshold(value: float) -> str | None:
    """Why ``value`` cannot be an anomaly-map threshold (``None`` when it can): it must be finite, > 0 (the map is
    >= 0, so 0 or less flags the whole brain) and at most :data:`MAX_THRESHOLD`."""
    if not _is_number(value) or not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if value <= 0:
        return f"must be > 0 (anomaly maps are >= 0: {value:g} would flag the whole brain), got {value:g}"
    if value > MAX_THRESHOLD:
        return f"must be at most {MAX_THRESHOLD:g} (no calibration produces more; it would flag nothing), got {value:g}"
    return None


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The contents of ``calibration.json``; fields in the file's key order. ``None`` = not in the file.

    Attributes:
        method: How the threshold was fitted (``healthy voxel false-positive rate`` or ``best pooled Dice on
            labelled tuning cases``).
        false_positive_rate: Healthy calibration: the share of healthy brain voxels above the threshold.
        threshold: The anomaly-map threshold of the segmentation (finite).
        calibrated_on: Healthy calibration: what the healthy references were fitted on, in words.
        healthy_cases: Healthy calibration: the case folders it was fitted on.
        held_out_healthy_scans: Healthy calibration: how many of them were not in the training split.
        notes: Healthy calibration: caveats (training scans used, too few scans for references).
        slice_errors: Healthy slice reference (calibrated z-scores); ``None`` with too few held-out scans.
        healthy_scan_scores: Healthy scans' scan scores (scan percentile); empty with too few held-out scans.
        csf_to_white_matter: Median CSF / white-matter intensity ratio of the healthy scans (contrast check).
        postprocessing: The post-processing sizes (voxels) the threshold was fitted with.
        max_healthy_ml: Healthy calibration: the budget of flagged volume (mL, median over the healthy scans) the
            threshold was raised to keep, if it was given.
        healthy_flagged_ml: Healthy calibration: each healthy scan's flagged volume at the threshold (mL, after the
            post-processing ``detect`` applies).
        residual_spread: Healthy calibration with ``--normalise-residual``: the file (in the model folder) of the
            healthy voxel-wise spread that divides every anomaly map; the threshold is in its units.
        residual_spread_sha256: That file's SHA-256 (a changed or swapped file is refused).
        map_units: What the threshold is in: ``residual`` or ``residual / healthy spread`` (:data:`MAP_UNITS`);
            ``None`` in files written before it was recorded.
        extent_threshold: The lower level of hysteresis delineation (< ``threshold``): a finding seeded above the
            threshold extends over its connected region above this level; ``None`` = the threshold alone.
        extent_method: How ``extent_threshold`` was chosen, in words.
        extent_tuning_dice: The pooled Dice of that delineation on the tuning cases it was chosen on.
        extent_tuning_cases: The tuning images it was chosen on (names only).
        extent_tuning_cases_sha256: Their content hashes (evaluate refuses to report on them).
        slice_score: Labelled calibration: the default slice score chosen on the tuning cases.
        slice_score_tuning_ap: Labelled calibration: each slice score's pooled AP on the tuning cases.
        tuning_dice: Labelled calibration: the pooled Dice at the threshold on the tuning cases.
        tuning_cases: Labelled calibration: the tuning images (absolute paths).
        tuning_cases_sha256: Labelled calibration: their content hashes (a renamed copy is still caught).
        extra: Keys of other brainuad versions, kept as read.
    """

    method: str | None = None
    false_positive_rate: float | None = None
    threshold: float
    calibrated_on: str | None = None
    healthy_cases: tuple[str, ...] | None = None
    held_out_healthy_scans: int | None = None
    notes: tuple[str, ...] | None = None
    slice_errors: SliceReference | None = None
    healthy_scan_scores: tuple[float, ...] | None = None
    csf_to_white_matter: float | None = None
    postprocessing: PostprocessingSizes | None = None
    max_healthy_ml: float | None = None
    healthy_flagged_ml: tuple[float, ...] | None = None
    residual_spread: str | None = None
    residual_spread_sha256: str | None = None
    map_units: str | None = None
    extent_threshold: float | None = None
    extent_method: str | None = None
    extent_tuning_dice: float | None = None
    extent_tuning_cases: tuple[str, ...] | None = None
    extent_tuning_cases_sha256: tuple[str, ...] | None = None
    slice_score: str | None = None
    slice_score_tuning_ap: Mapping[str, float] | None = None
    tuning_dice: float | None = None
    tuning_cases: tuple[str, ...] | None = None
    tuning_cases_sha256: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = check_threshold(self.threshold)
        if problem:
            # A NaN threshold flags nothing, a negative one everything, and neither says so: never built or written.
            raise BrainuadError(f"a calibration's threshold {problem}")

    @property
    def source(self) -> str:
        """Where a threshold taken from this calibration comes from, in words (summaries and reports)."""
        return f"{CALIBRATION_FILE} ({self.method})"

    @property
    def simulated_reference(self) -> bool:
        """Whether every healthy reference scan was simulated (``sim-*`` cases, e.g. ``builtin:t2``'s)."""
        return bool(self.healthy_cases) and all(Path(str(c)).name.startswith("sim-") for c in self.healthy_cases or ())

    @property
    def reference_note(self) -> str | None:
        """A sentence for the console and the report when the healthy reference was simulated, else ``None``."""
        if not self.simulated_reference:
            return None
        return (
            f"the healthy reference is {len(self.healthy_cases or ())} simulated scans, not real healthy scans: "
            "the threshold and calibrated z come from simulations, and no percentile among healthy scans is given"
        )

    @property
    def healthy_scores(self) -> tuple[float, ...]:
        """The healthy scans' scan scores (empty when there are none)."""
        return self.healthy_scan_scores or ()

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> Calibration:
        """Validate the JSON of a ``calibration.json`` (``path`` names it in errors).

        Raises:
            InputError: Not an object, a missing or non-finite threshold, or a known key of the wrong type; the
                message names the key and says to run ``brainuad calibrate``.
        """
        if not isinstance(data, dict):
            raise InputError(path, f"not a calibration (expected a JSON object, got {type(data).__name__})")
        threshold = data.get("threshold")
        problem = check_threshold(threshold)
        if problem:
            raise InputError(path, f"'threshold' {problem}; run 'brainuad calibrate'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values: dict[str, Any] = {"threshold": float(threshold)}
        for key in known - {"threshold"}:
            if data.get(key) is not None:
                values[key] = _parse(key, data[key], path)
        named, digest = values.get("residual_spread"), values.get("residual_spread_sha256")
        if (named is None) != (digest is None) or (
            digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest))
        ):
            raise _fail(path, "residual_spread_sha256", "a 64-digit hex SHA-256 beside 'residual_spread'", digest)
        _check_values(values, path)
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``calibration.json``: the keys the fitting wrote, in its order; unknown keys last."""
        healthy = self.healthy_cases is not None
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and not (healthy and f.name in _HEALTHY_NULLABLE)):
                continue
            if isinstance(value, (SliceReference, PostprocessingSizes)):
                value = dataclasses.asdict(value)
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


def read_calibration(model_dir: str | Path) -> Calibration | None:
    """The calibration of a model folder (or ``builtin:NAME``), validated; ``None`` if it was never calibrated.

    Raises:
        InputError: The file is not valid JSON or not a valid calibration (naming the file).
    """
    from brainuad.io.shipped import resolve_model_dir
    from brainuad.io.volumes import read_json

    path = resolve_model_dir(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    return Calibration.from_dict(read_json(path), path)


def write_calibration(model_dir: str | Path, calibration: Calibration) -> Path:
    """Save ``calibration`` as the model folder's ``calibration.json`` (atomically).

    Raises:
        BrainuadError: ``model_dir`` is a built-in model (its install folder is read-only to brainuad).
    """
    from brainuad.io.shipped import refuse_builtin
    from brainuad.io.volumes import write_json

    refuse_builtin(model_dir, "calibrate")
    return write_json(Path(model_dir) / CALIBRATION_FILE, calibration.to_dict())


def read_residual_spread(
    model_dir: str | Path, calibration: Calibration | None, shape: tuple[int, ...]
) -> np.ndarray | None:
    """The healthy voxel-wise spread that divides the anomaly map, when ``calibration`` names one; else ``None``.

    Raises:
        InputError: The file is missing, changed since calibration (SHA-256), not a float32 ``spread`` tensor of
            ``shape``, or holds values that are not finite and positive (naming the file).
    """
    if calibration is None or calibration.residual_spread is None:
        return None
    import hashlib

    from safetensors import SafetensorError
    from safetensors.numpy import load

    from brainuad.io.shipped import resolve_model_dir

    name = calibration.residual_spread
    path = resolve_model_dir(model_dir) / name
    again = "; run 'brainuad calibrate --normalise-residual' again"
    if Path(name).name != name or not path.is_file():
        raise InputError(path, f"the residual spread that calibration.json names is missing{again}")
    data = path.read_bytes()  # hashed and parsed from one read: no swap in between
    if hashlib.sha256(data).hexdigest() != calibration.residual_spread_sha256:
        raise InputError(path, f"changed since the calibration that names it (SHA-256 differs){again}")
    try:
        spread = load(data).get("spread")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors file ({exc}){again}") from exc
    if spread is None or spread.dtype != np.float32 or spread.shape != tuple(shape):
        raise InputError(path, f"expected a float32 'spread' tensor of shape {tuple(shape)}{again}")
    if not (np.isfinite(spread).all() and (spread > 0).all()):
        raise InputError(path, f"the spread must be finite and positive everywhere{again}")
    spread.flags.writeable = False  # shared by every analysis of the loaded model
    return spread


def _check_values(values: dict[str, Any], path: str | Path | None) -> None:
    """Refuse values no calibration can produce, and keys that only make sense together, naming the key."""
    rate = values.get("false_positive_rate")
    if rate is not None and not (math.isfinite(rate) and 0 < rate <= 1):
        raise _fail(path, "false_positive_rate", "a share of voxels in (0, 1]", rate)
    extent = values.get("extent_threshold")
    if extent is not None and not (math.isfinite(extent) and 0 < extent <= values["threshold"]):
        raise _fail(path, "extent_threshold", "a level in (0, threshold]", extent)
    for key, high in (("tuning_dice", 1.0), ("max_healthy_ml", math.inf), ("extent_tuning_dice", 1.0)):
        value = values.get(key)
        if key.endswith("dice") and value is not None and math.isnan(value):
            continue  # undefined (tuning cases without lesion voxels): written so by calibrate, kept as read
        if value is not None and not (math.isfinite(value) and 0 <= value <= high):
            raise _fail(path, key, f"a number in [0, {high:g}]", value)
    ratio = values.get("csf_to_white_matter")
    if ratio is not None and not (math.isfinite(ratio) and 0 < ratio < 100):
        raise _fail(path, "csf_to_white_matter", "a finite positive CSF / white-matter ratio", ratio)
    units, spread = values.get("map_units"), values.get("residual_spread")
    if units is not None and units not in MAP_UNITS:
        raise _fail(path, "map_units", " or ".join(repr(u) for u in MAP_UNITS), units)
    if units == MAP_UNITS[1] and spread is None:
        # The threshold is in spread units: without the spread the raw map is compared with it.
        raise _fail(path, "residual_spread", f"the spread file (map_units is {units!r})", None)
    if units == MAP_UNITS[0] and spread is not None:
        raise _fail(path, "map_units", f"{MAP_UNITS[1]!r} beside 'residual_spread'", units)
    for key in ("healthy_scan_scores", "healthy_flagged_ml"):
        if any(not math.isfinite(v) or v < 0 for v in values.get(key) or ()):
            raise _fail(path, key, "finite numbers >= 0", values[key])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(path: str | Path | None, key: str, expected: str, value: Any) -> InputError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InputError(path, f"'{key}' must be {expected}, got {shown}; run 'brainuad calibrate'")


def _numbers(key: str, value: Any, path: str | Path | None) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise _fail(path, key, "a list of numbers", value)
    return tuple(float(v) for v in value)


def _strings(key: str, value: Any, path: str | Path | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, key, "a list of strings", value)
    return tuple(value)


def _parse(key: str, value: Any, path: str | Path | None) -> Any:
    """One known key's JSON value as its field's type (``value`` is not ``None``)."""
    if key in ("method", "calibrated_on", "slice_score", "residual_spread", "residual_spread_sha256", "map_units",
               "extent_method"):  # fmt: skip
        if not isinstance(value, str):
            raise _fail(path, key, "a string", value)
        return value
    if key in ("false_positive_rate", "csf_to_white_matter", "tuning_dice", "max_healthy_ml", "extent_threshold",
               "extent_tuning_dice"):  # fmt: skip
        if not _is_number(value):
            raise _fail(path, key, "a number", value)
        return float(value)
    if key == "held_out_healthy_scans":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(path, key, "a count (an integer >= 0)", value)
        return value
    if key in ("healthy_cases", "notes", "tuning_cases", "tuning_cases_sha256", "extent_tuning_cases",
               "extent_tuning_cases_sha256"):  # fmt: skip
        return _strings(key, value, path)
    if key in ("healthy_scan_scores", "healthy_flagged_ml"):
        return _numbers(key, value, path)
    if key == "slice_errors":
        if not isinstance(value, dict) or set(value) != {"mean", "std"}:
            raise _fail(path, key, "an object with 'mean' and 'std' lists", value)
        mean, std = _numbers(f"{key}.mean", value["mean"], path), _numbers(f"{key}.std", value["std"], path)
        if len(mean) != len(std):
            raise _fail(path, key, "'mean' and 'std' lists of one length", value)
        return SliceReference(mean, std)
    if key == "postprocessing":
        names = [f.name for f in dataclasses.fields(PostprocessingSizes)]
        if not isinstance(value, dict) or set(value) != set(names):
            raise _fail(path, key, f"an object with {', '.join(names)}", value)
        if not all(isinstance(value[n], int) and not isinstance(value[n], bool) for n in names):
            raise _fail(path, key, "voxel counts (integers)", value)
        return PostprocessingSizes(**{n: value[n] for n in names})
    if key == "slice_score_tuning_ap":
        if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
            raise _fail(path, key, "an object of numbers", value)
        return {str(k): float(v) for k, v in value.items()}
    raise AssertionError(key)  # every field of Calibration is parsed above
