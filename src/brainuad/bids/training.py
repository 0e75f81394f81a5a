"""``brainuad train --data BIDS_DIR``: a healthy training cohort chosen from a BIDS dataset, preprocessed for training.

The scans are chosen by suffix, participant labels and ``participants.tsv`` conditions (``group=control``), and
preprocessed like ``brainuad preprocess`` into a case folder (finished scans are reused on a re-run).
"""

from __future__ import annotations

from pathlib import Path

from brainuad.bids.layout import Scan, check_dataset, check_output_dir, participants_matching, select_scans
from brainuad.config import PreprocessConfig
from brainuad.errors import BrainuadError, InputError
from brainuad.preprocess.pipeline import preprocess_batch


def is_bids_dataset(folder: str | Path) -> bool:
    """Whether ``folder`` is a BIDS dataset (``dataset_description.json`` and ``sub-*`` folders at its top)."""
    folder = Path(folder)
    return (folder / "dataset_description.json").is_file() and any(folder.glob("sub-*"))


def training_scans(
    bids_dir: str | Path,
    suffix: str = "T2w",
    participant_labels: list[str] | None = None,
    conditions: list[str] | None = None,
) -> list[Scan]:
    """The scans of a BIDS dataset to train on: ``suffix``, the given participants, meeting the conditions.

    Raises:
        InputError: Not a BIDS dataset, unknown participant, bad condition, or no scan left.
    """
    root = check_dataset(bids_dir)
    scans = select_scans(root, suffix, participant_labels)
    keep = participants_matching(root, conditions or [])
    chosen = [s for s in scans if keep is None or s.subject in keep]
    if not chosen:
        raise InputError(root, f"no {suffix} scan of a participant meeting {' and '.join(conditions or [])}")
    return chosen


def prepare_training_cases(
    bids_dir: str | Path,
    cases_dir: str | Path,
    config: PreprocessConfig,
    suffix: str = "T2w",
    participant_labels: list[str] | None = None,
    conditions: list[str] | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Preprocess the chosen scans into ``cases_dir`` (one case folder per scan); returns their case folders.

    Raises:
        InputError: As :func:`training_scans`.
        OutputError: ``cases_dir`` inside the dataset but not under ``derivatives/``.
        BrainuadError: A scan failed to preprocess (named): a training cohort must be whole.
    """
    scans = training_scans(bids_dir, suffix, participant_labels, conditions)
    cases_dir = check_output_dir(Path(bids_dir), cases_dir)
    result = preprocess_batch([s.path for s in scans], cases_dir, config, jobs=jobs, progress=progress)
    if result.failed:
        raise BrainuadError("; ".join(message for _, message in result.failed))
    return sorted(Path(folder) for folder in [*result.done, *result.skipped])
