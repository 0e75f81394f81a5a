"""``brainuad export RUN OUT``: a trained run as a model folder to share — what detect needs and nothing else.

The folder holds ``model.safetensors`` (the weights), ``config.json``, ``calibration.json`` with every file it names
(a residual-spread file), the run's ``summary.json`` (its learned-nothing verdict, which detect shows) and a
``MODEL_CARD.md`` (the run's own, or one written from what the run records). No scan, no training cache, no split
(which names the training cases) and no absolute path: the calibration's case paths become case names, their
content hashes stay. ``--model OUT`` then works with every verb that reads a model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from brainuad.errors import InputError, OutputError
from brainuad.io.files import OWNER_MARKER, atomic_folder, is_safe_name, read_json, write_json
from brainuad.io.shipped import resolve_model_dir

#: Files a run folder must hold to be exported.
REQUIRED = ("config.json", "model.safetensors", "calibration.json")
#: Calibration fields that name case files or folders: exported as case names (their hashes are kept beside).
CASE_FIELDS = ("healthy_cases", "tuning_cases", "extent_tuning_cases")


def export_model(run: str | Path, out: str | Path) -> Path:
    """Write the shareable model folder of ``run`` (a run folder or ``builtin:NAME``) to ``out``.

    Args:
        run: A trained and calibrated run folder, or ``builtin:NAME``.
        out: The folder to create; it must not exist, or be empty.

    Returns:
        ``out``.

    Raises:
        InputError: ``run`` is not a model folder, or is not calibrated (a shared model needs its threshold).
        OutputError: ``out`` exists and is not empty (nothing is written), or cannot be written.
    """
    import os

    source = resolve_model_dir(run)
    out = Path(os.path.abspath(out))  # "." is named by its own name (the current folder, empty)
    if not is_safe_name(out.name) or out == Path(out.anchor):
        raise OutputError(out, "unsafe output folder name (it could point outside its parent folder)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(out, "already exists and is not empty; export writes a new folder — choose another OUT")
    if not source.is_dir():
        raise InputError(source, "model folder not found")
    for name in REQUIRED:
        if not (source / name).is_file():
            hint = "; run 'brainuad calibrate' on it first" if name == "calibration.json" else ""
            raise InputError(source / name, f"not found: not an exportable model{hint}")
    calibration = _record(source / "calibration.json", "a calibration")
    _record(source / "config.json", "a model config")
    for key in CASE_FIELDS:
        if calibration.get(key) is not None and not isinstance(calibration[key], list):
            raise InputError(source / "calibration.json", f"{key!r} must be a list of case paths")
    named = [calibration[k] for k in ("residual_spread",) if calibration.get(k)]
    for name in named:
        if not isinstance(name, str) or Path(name).name != name or not (source / name).is_file():
            raise InputError(source / "calibration.json", f"names {name!r}, which is not in the model folder")
    summary = _record(source / "summary.json", "a training summary") if (source / "summary.json").is_file() else None
    card = source / "MODEL_CARD.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else model_card(source, out.name)

    def write(staging: Path) -> None:
        for name in ("config.json", "model.safetensors", *named):
            shutil.copyfile(source / name, staging / name)
        write_json(staging / "calibration.json", _portable_calibration(calibration))
        if summary is not None:
            write_json(staging / "summary.json", summary)  # numbers only: losses, costs, the check
        (staging / "MODEL_CARD.md").write_text(text, encoding="utf-8")

    try:
        if out.exists():
            # Empty (checked above), and perhaps the current folder: filled in place, never removed and made again.
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out))
            try:
                write(staging)
                (staging / OWNER_MARKER).write_text("written by brainuad; replaced only by brainuad\n")
                for path in sorted(staging.iterdir()):
                    os.replace(path, out / path.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            with atomic_folder(out) as staging:
                write(staging)
    except OSError as exc:
        raise OutputError(out, f"could not write ({exc.strerror or exc})") from exc
    return out


def _record(path: Path, what: str) -> dict:
    """A run's JSON record, which must be an object.

    Raises:
        InputError: It is unreadable or not a JSON object (naming the file).
    """
    record = read_json(path)
    if not isinstance(record, dict):
        raise InputError(path, f"not {what} (a JSON object)")
    return record


def _section(record: dict, key: str, path: Path) -> dict:
    """``record[key]`` when it is an object (absent: empty); otherwise an :class:`InputError` naming the file."""
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(path, f"{key!r} must be a JSON object")
    return value


def _portable_calibration(calibration: dict) -> dict:
    """The calibration with its case paths reduced to case names (a file's or folder's name)."""
    fixed = dict(calibration)
    for key in CASE_FIELDS:
        if isinstance(fixed.get(key), list):
            fixed[key] = [Path(str(v)).name for v in fixed[key]]
    return fixed


def model_card(run: Path, name: str) -> str:
    """A ``MODEL_CARD.md`` written from what the run folder records: the method and its settings, the
    preprocessing, the training and its learned-nothing check, the calibration and its caveats, the versions."""
    config = _record(run / "config.json", "a model config")
    calibration = _record(run / "calibration.json", "a calibration")
    summary = _record(run / "summary.json", "a training summary") if (run / "summary.json").is_file() else {}
    provenance = _record(run / "provenance.json", "a provenance record") if (run / "provenance.json").is_file() else {}
    split = _record(run / "split.json", "a split") if (run / "split.json").is_file() else {}
    model, training = (_section(config, k, run / "config.json") for k in ("model", "training"))
    pre = _section(config, "preprocessing", run / "config.json")
    check = _section(summary, "reconstruction_check", run / "summary.json")
    versions = _section(provenance, "versions", run / "provenance.json")
    notes = calibration.get("notes") or []
    if not isinstance(notes, list):
        raise InputError(run / "calibration.json", "'notes' must be a list of strings")
    for part in ("train", "val"):
        if not isinstance(split.get(part, []), list):
            raise InputError(run / "split.json", f"{part!r} must be a list of case folders")
    lines = [
        f"# {name}",
        "",
        "Exported with `brainuad export` from a brainuad training run. Research use only, not a medical device.",
        "",
        "## Model",
        "",
        f"- Method: `{model.get('kind')}`; input grid {model.get('input_shape')} (preset `{pre.get('preset')}`).",
        f"- Settings: `{ {k: v for k, v in model.items() if k not in ('kind', 'input_shape')} }`",
        "",
        "## Training",
        "",
        f"- {len(split.get('train', []))} training and {len(split.get('val', []))} validation scans (case names are"
        f" not shipped); seed {training.get('seed')}.",
        f"- Epochs done: {summary.get('epochs_done')}; best validation loss {summary.get('best_val_loss')} "
        f"(epoch {summary.get('best_epoch')}); {summary.get('parameters')} parameters.",
    ]
    if check:
        verdict = {True: "beats", False: "does NOT beat", None: "was not compared with"}.get(
            check.get("beats_mean_image"), "?"
        )
        lines.append(f"- Learned-nothing check: the model {verdict} the healthy cohort's mean image on held-out scans.")
    lines += [
        "",
        "## Calibration",
        "",
        f"- Threshold {calibration.get('threshold')} ({calibration.get('method')}).",
        f"- Fitted on: {calibration.get('calibrated_on')}.",
        *(f"- Note: {note}" for note in notes),
        "",
        "## Preprocessing",
        "",
        f"`brainuad preprocess --preset {pre.get('preset')}` (skull strip `{pre.get('skull_strip')}`, template "
        f"contrast `{pre.get('template_contrast')}`); `detect` applies the same to every input scan.",
        "",
        "## Versions",
        "",
        f"- {', '.join(f'{k} {v}' for k, v in versions.items()) or 'not recorded'}",
        f"- git {provenance.get('git') or 'unknown'}",
        "",
    ]
    return "\n".join(lines)
