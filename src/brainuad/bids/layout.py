"""A BIDS dataset read with ancpbids: the checks, the scans a run selects, and one output name per scan.

ancpbids was chosen after measuring pybids, ancpbids and bids2table on a 1,000-participant layout
(``benchmarks/bids_libraries.py``; numbers in the README's BIDS section): it indexes fastest, in the least memory,
and is pure Python with no required dependency.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from brainuad.errors import ConfigError, InputError, OutputError

#: The anatomical suffixes brainuad reads, and the template contrast a model trained on each uses.
SUFFIXES = ("T1w", "T2w", "FLAIR")
#: Entities that name a scan in its derivatives, in the order BIDS writes them (``sub`` and ``ses`` first).
NAME_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part")
#: fMRIPrep-style long entity names (in the filter file) → the short keys of file names.
LONG_NAMES = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "run": "run",
    "echo": "echo",
    "part": "part",
    "suffix": "suffix",
    "extension": "extension",
    "datatype": "datatype",
}


@dataclass(frozen=True)
class Scan:
    """One anatomical scan of the dataset.

    Attributes:
        path: The NIfTI file.
        entities: Its BIDS entities (short keys: ``sub``, ``ses``, ``acq``, ``run`` …).
        suffix: ``T1w``, ``T2w`` or ``FLAIR``.
    """

    path: Path
    entities: dict[str, str] = field(hash=False)
    suffix: str

    @property
    def subject(self) -> str:
        return self.entities["sub"]

    @property
    def session(self) -> str | None:
        return self.entities.get("ses")

    @property
    def prefix(self) -> str:
        """The entities part of its derivatives' names: ``sub-01_ses-2_acq-fast``."""
        return "_".join(f"{k}-{self.entities[k]}" for k in NAME_ENTITIES if k in self.entities)

    @property
    def name(self) -> str:
        """The scan's own name without extension (``sub-01_ses-2_T2w``): its findings folder's name."""
        return f"{self.prefix}_{self.suffix}"

    @property
    def folder(self) -> Path:
        """Where its derivatives go, relative to the output folder (``sub-01/ses-2/anat``)."""
        parts = [f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else [])
        return Path(*parts, "anat")


def check_dataset(bids_dir: str | Path) -> Path:
    """The dataset's folder, checked: it exists and holds a readable ``dataset_description.json``.

    Raises:
        InputError: No such folder, or no (valid) ``dataset_description.json``.
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise InputError(root, "BIDS dataset folder not found")
    description = root / "dataset_description.json"
    if not description.is_file():
        raise InputError(
            root, "not a BIDS dataset: no dataset_description.json at its top (every BIDS dataset has one)"
        )
    try:
        content = json.loads(description.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise InputError(description, f"not readable JSON ({exc})") from exc
    if not isinstance(content, dict):
        kind = type(content).__name__
        raise InputError(description, f"must be a JSON object (BIDS' dataset description), not a {kind}")
    return root


def check_output_dir(bids_dir: Path, output_dir: str | Path) -> Path:
    """The output folder, refused when it is the dataset itself or inside it but not under ``derivatives/``.

    Raises:
        OutputError: Writing there would change the raw dataset.
    """
    out = Path(output_dir)
    root, target = bids_dir.resolve(), out.resolve()
    if target == root:
        raise OutputError(out, "is the BIDS dataset itself; write derivatives to BIDS_DIR/derivatives/brainuad")
    if target.is_relative_to(root) and not target.is_relative_to(root / "derivatives"):
        raise OutputError(out, f"is inside the BIDS dataset {bids_dir} but not under its derivatives/ folder")
    if root.is_relative_to(target):
        raise OutputError(out, f"holds the BIDS dataset {bids_dir}; choose a folder beside it or in derivatives/")
    return out


def index_scans(bids_dir: Path, suffixes: Iterable[str] = SUFFIXES) -> list[Scan]:
    """Every raw anatomical NIfTI scan of the dataset with one of ``suffixes`` (derivatives excluded)."""
    import ancpbids
    from ancpbids.utils import parse_bids_name

    layout = ancpbids.BIDSLayout(str(bids_dir))
    files = layout.get(return_type="filename", scope="raw", extension=[".nii.gz", ".nii"])
    suffixes = set(suffixes)
    scans = []
    for file in sorted(set(files)):
        path = Path(file)
        try:
            parts = path.relative_to(bids_dir).parts
        except ValueError:  # not resolved: in a DataLad dataset every file is a symbolic link into the annex
            parts = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(bids_dir))).parts
        if parts[0] in ("derivatives", "sourcedata", "code") or parts[-2] != "anat":
            continue  # raw anatomical scans only
        parsed = parse_bids_name(path.name)
        if not parsed or "sub" not in parsed.get("entities", {}) or parsed.get("suffix") not in suffixes:
            continue
        scans.append(Scan(path, dict(parsed["entities"]), parsed["suffix"]))
    return scans


def read_filter_file(path: str | Path | None, suffix: str) -> dict[str, list[str | None]]:
    """The entity filters for ``suffix`` from an fMRIPrep-style ``--bids-filter-file`` (``{"t2w": {...}}``).

    Values may be a string, a list of strings, or ``null`` (the entity must be absent).

    Raises:
        InputError: The file is not JSON of that shape, or names an unknown entity.
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"filter file is not readable JSON ({exc})") from exc
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise InputError(path, 'filter file must map a query name to entity filters, e.g. {"t2w": {"session": "1"}}')
    # A query name brainuad does not know (a typo, or "T2w" for "t2w") would be ignored and every scan processed.
    known = {q.lower() for q in SUFFIXES}
    unknown = sorted(q for q in content if q not in known)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise InputError(path, f"unknown query name(s) {names}; known: {', '.join(sorted(known))} (lower case)")
    query = content.get(suffix.lower(), {})
    filters: dict[str, list[str | None]] = {}
    for key, value in query.items():
        if key not in LONG_NAMES and key not in LONG_NAMES.values():
            raise InputError(path, f"unknown entity {key!r} in the filter file; known: {', '.join(LONG_NAMES)}")
        values = value if isinstance(value, list) else [value]
        filters[LONG_NAMES.get(key, key)] = [None if v is None else str(v) for v in values]
    return filters


def _matches(scan: Scan, filters: Mapping[str, list[str | None]]) -> bool:
    for key, allowed in filters.items():
        if key in ("datatype", "extension"):
            continue  # anatomical NIfTI files only, always
        value = scan.suffix if key == "suffix" else scan.entities.get(key)
        if value not in allowed:
            return False
    return True


def select_scans(
    bids_dir: Path,
    suffix: str,
    participant_labels: Iterable[str] | None = None,
    session_labels: Iterable[str] | None = None,
    filters: Mapping[str, list[str | None]] | None = None,
) -> list[Scan]:
    """The scans a run works on, sorted by name, each with a distinct output name.

    Raises:
        InputError: A participant label not in the dataset, no scan left for the suffix and filters, or two scans
            (e.g. ``.nii`` and ``.nii.gz``) that would write the same derivatives.
    """
    if suffix not in SUFFIXES:
        raise ConfigError(f"--suffix must be one of {', '.join(SUFFIXES)}, got {suffix!r}")
    scans = index_scans(bids_dir)
    subjects = {s.name.split("-", 1)[1] for s in bids_dir.glob("sub-*") if s.is_dir()}
    labels = [label.removeprefix("sub-") for label in participant_labels or []]
    unknown = sorted(set(labels) - subjects)
    if unknown:
        raise InputError(bids_dir, f"no participant {', '.join('sub-' + u for u in unknown)} in the dataset")
    sessions = [label.removeprefix("ses-") for label in session_labels or []]
    chosen = [
        s
        for s in scans
        if s.suffix == suffix
        and (not labels or s.subject in labels)
        and (not sessions or s.session in sessions)
        and _matches(s, filters or {})
    ]
    if not chosen:
        raise InputError(bids_dir, f"no {suffix} scan matches (participants, sessions and filters as given)")
    by_name: dict[str, Scan] = {}
    for scan in chosen:
        if scan.name in by_name:
            raise InputError(
                scan.path, f"maps to the same derivatives ({scan.name}) as {by_name[scan.name].path}; remove one"
            )
        by_name[scan.name] = scan
    return sorted(chosen, key=lambda s: s.name)


def read_participants(table: Path) -> list[dict[str, str]]:
    """The rows of a ``participants.tsv``, as a spreadsheet may have saved it (UTF-8 BOM, CRLF line ends).

    Raises:
        InputError: Unreadable, not UTF-8, or without a ``participant_id`` column (naming the file).
    """
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(table, f"not a readable UTF-8 table ({exc})") from exc
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]
    if rows and "participant_id" not in rows[0]:
        raise InputError(table, f"has no 'participant_id' column (columns: {', '.join(h or '?' for h in header)})")
    return rows


def participants_matching(bids_dir: Path, conditions: Iterable[str]) -> set[str] | None:
    """Participant labels whose ``participants.tsv`` row meets every ``COLUMN=VALUE[,VALUE…]`` condition.

    ``None`` when there are no conditions (everyone).

    Raises:
        InputError: No participants.tsv, a malformed condition, or an unknown column.
    """
    conditions = list(conditions)
    if not conditions:
        return None
    table = bids_dir / "participants.tsv"
    if not table.is_file():
        raise InputError(table, "not found, but a participants filter was given")
    rows = read_participants(table)
    columns = set(rows[0]) if rows else set()
    keep = {row.get("participant_id", "").removeprefix("sub-") for row in rows}
    for condition in conditions:
        column, sep, values = condition.partition("=")
        if not sep or not column:
            raise ConfigError(f"participants filter must read COLUMN=VALUE[,VALUE…], got {condition!r}")
        if column not in columns:
            raise InputError(table, f"has no column {column!r} (columns: {', '.join(sorted(columns))})")
        allowed = set(values.split(","))
        keep &= {row["participant_id"].removeprefix("sub-") for row in rows if row[column] in allowed}
    return keep
