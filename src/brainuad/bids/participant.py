"""``brainuad bids BIDS_DIR OUTPUT_DIR participant``: detection on each selected scan, written as BIDS derivatives.

For a scan ``sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz`` the output folder gets, under ``sub-01/ses-1/anat/``:

- ``sub-01_ses-1_desc-anomaly_map.nii.gz`` (the post-processed anomaly map), ``…_desc-lesions_mask.nii.gz`` (the
  segmentation) and ``…_desc-reconstruction_T2w.nii.gz``, in the scan's own space (its grid, affine, voxel order);
- the same three with ``space-MNI152NLin2009aSym_res-N`` (the model's MNI crop grid at N mm);
- a JSON sidecar beside each (``Sources``, the model, its weights hash, the threshold and where it came from).

No absolute path is written: scans are ``bids:raw:`` URIs, ``DatasetLinks.raw`` is the raw dataset relative to the
derivative dataset, and the model is ``builtin:NAME@VERSION+SHA`` or its run folder relative to the dataset.

Each scan's whole findings folder (``brainuad detect``'s: report, slice scores, summary) lies in
``findings/<scan name>/``, listed in ``.bidsignore``. ``dataset_description.json`` says ``DatasetType: derivative``
and ``GeneratedBy`` brainuad (version and git hash). A re-run skips scans finished with the same inputs and settings
(``detect``'s rule); shards of one dataset may write into one output folder at the same time.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from brainuad import __version__
from brainuad.bids.layout import Scan, check_dataset, check_output_dir, read_filter_file, select_scans
from brainuad.errors import BrainuadError, ConfigError, OutputError
from brainuad.io.files import atomic_path, read_json, write_json
from brainuad.io.portable import relative_path, resolve_relative
from brainuad.io.provenance import git_hash
from brainuad.io.shards import Shard
from brainuad.io.shipped import PREFIX, is_builtin, resolve_model_dir
from brainuad.preprocess.templates import Grid

#: The template brainuad registers to: nilearn's bundled ICBM152 2009a nonlinear symmetric T1 template
#: (``mni_icbm152_t1_tal_nlin_sym_09a``), TemplateFlow's MNI152NLin2009aSym — not fMRIPrep's default 2009cAsym.
MNI_SPACE = "MNI152NLin2009aSym"
#: findings file → (entities after the scan's, suffix; the suffix ``None`` = the scan's own), and its description.
DERIVATIVES = {
    "anomaly_map.nii.gz": ("desc-anomaly", "map", "Post-processed anomaly map |x - x̂| on the 0…1 intensity scale "
                          "(divided by the healthy voxel-wise spread when the model's calibration says so)"),
    "segmentation.nii.gz": ("desc-lesions", "mask", "Anomalous components above the threshold (0/1)"),
    "reconstruction.nii.gz": ("desc-reconstruction", None, "The model's healthy reconstruction, in the scan's units"),
}
#: Not BIDS files: each scan's findings folder, the group outputs, and the anomaly maps (BIDS has no suffix for a
#: continuous anomaly map yet; their names and sidecars follow the derivatives rules, checked by brainuad's tests).
BIDSIGNORE = "findings\ngroup\n*_desc-anomaly_map.nii.gz\n*_desc-anomaly_map.json\n"
#: Sidecar fields BIDS requires or recommends per derivative.
EXTRA_FIELDS = {
    "segmentation.nii.gz": {"Type": "Lesion"},
    "reconstruction.nii.gz": {"SkullStripped": True},
}


@dataclass
class ParticipantResult:
    """What a participant-level run did: scans written, reused, failed (with the reason)."""

    done: list[Scan] = field(default_factory=list)
    skipped: list[Scan] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def default_suffix(model: str | Path) -> str:
    """The suffix (T1w, T2w, FLAIR) of the scans a model was trained on.

    A shipped model says it in its name (``builtin:t1``, ``builtin:t2``, ``builtin:flair``); a run folder in the
    names of its training scans (``split.json`` → each case's ``record.json`` input: BIDS ``_T2w``, IXI ``-T2``).

    Raises:
        ConfigError: The model does not tell (then ``--suffix`` must).
    """
    import re

    spec = str(model)
    if is_builtin(spec):
        return {"t1": "T1w", "t2": "T2w", "flair": "FLAIR"}.get(spec.split(":", 1)[1]) or _no_suffix(spec)
    run = resolve_model_dir(model)
    found = set()
    try:
        for case in read_json(run / "split.json").get("train", []):
            source = read_json(resolve_relative(case, run) / "record.json").get("input") or {}
            name = Path(str(source.get("path", "") if isinstance(source, dict) else source)).name
            match = re.search(r"_(T1w|T2w|FLAIR)\.nii|-(T1|T2)\.nii", name)
            if match:
                found.add(match.group(1) or f"{match.group(2)}w")
    except (BrainuadError, OSError, AttributeError):
        found = set()
    return found.pop() if len(found) == 1 else _no_suffix(spec)


def _no_suffix(spec: str) -> str:
    raise ConfigError(f"{spec}: cannot tell which contrast the model was trained on; pass --suffix T1w|T2w|FLAIR")


def derivative_names(scan: Scan, resolution_mm: int) -> dict[str, str]:
    """``findings-relative file → derivative file name`` for one scan (native, then MNI at ``resolution_mm``)."""
    names = {}
    for source, (entities, suffix, _) in DERIVATIVES.items():
        suffix = suffix or scan.suffix
        names[source] = f"{scan.prefix}_{entities}_{suffix}.nii.gz"
        names[f"mni/{source}"] = f"{scan.prefix}_space-{MNI_SPACE}_res-{resolution_mm}_{entities}_{suffix}.nii.gz"
    return names


#: The derivative dataset's README (identical from every shard and run of one version).
DERIVATIVES_README = """# brainuad derivatives

Unsupervised anomaly detection of the raw dataset's anatomical scans by brainuad {version} (a research tool, not a
medical device: findings are anomalies with respect to healthy brains, not diagnoses).

Per scan: the anomaly map (`desc-anomaly_map`) and the segmentation of findings (`desc-lesions_mask`), in the scan's
own space and in the MNI crop space (`space-`, `res-` entities), and the model's healthy reconstruction
(`desc-reconstruction`), each with a JSON sidecar naming the model (a built-in model as `builtin:NAME@VERSION+SHA`,
or a run folder relative to this dataset), its weights' hash, the threshold and the raw file (`bids:raw:` URIs).
`findings/` holds each scan's full report (listed in `.bidsignore`); `group/` the group level's table and triage
page.
"""


def write_dataset_description(out: Path, bids_dir: Path) -> None:
    """The derivative dataset's ``dataset_description.json`` and ``.bidsignore`` (identical from every shard).

    Raises:
        OutputError: The folder holds another tool's dataset.
    """
    path = out / "dataset_description.json"
    if path.is_file():
        existing = read_json(path)
        generated = existing.get("GeneratedBy", []) if isinstance(existing, dict) else []
        makers = [g.get("Name") for g in generated if isinstance(g, dict)] if isinstance(generated, list) else []
        if "brainuad" not in makers:
            raise OutputError(out, "holds another dataset (its dataset_description.json is not brainuad's)")
    # The raw dataset relative to this one (a relative URI, as the BIDS spec allows for DatasetLinks): no absolute
    # path of this machine, and it holds as long as both move together (derivatives/brainuad inside the dataset).
    raw = relative_path(bids_dir.resolve(), out.resolve())
    description = {
        "Name": "brainuad anomaly detection",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {"Name": "brainuad", "Version": __version__, "Description": f"git {git_hash() or 'unknown'}"}
        ],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": raw},
    }
    write_json(path, description)
    with atomic_path(out / ".bidsignore") as tmp:
        tmp.write_text(BIDSIGNORE)
    with atomic_path(out / "README.md") as tmp:  # the validator asks every dataset for one (README_FILE_MISSING)
        tmp.write_text(DERIVATIVES_README.format(version=__version__), encoding="utf-8")


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems), replacing it atomically."""
    if target.exists() and os.path.samefile(source, target):
        return  # already linked (and renaming a link onto another link of the same file would do nothing)
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _model_name(model: dict, findings: Path, out: Path) -> str:
    """The model as a sidecar names it: ``builtin:NAME@VERSION+SHA``, or the run folder relative to the derivative
    dataset's root (the findings summary names it relative to the findings folder)."""
    name = str(model.get("name") or model.get("run_dir"))  # run_dir: findings of an older brainuad
    if name.startswith(PREFIX):
        return name
    if Path(name).is_absolute():  # an older brainuad's absolute run folder: no path of this machine in a sidecar
        return relative_path(name, out)
    return Path(os.path.normpath(os.path.join(relative_path(findings, out), name))).as_posix()


def export_scan(scan: Scan, findings: Path, out: Path, bids_dir: Path) -> list[Path]:
    """Write one scan's derivatives (NIfTI files and sidecars) from its findings folder; returns the files.

    Raises:
        OutputError: A derivative of that name exists and was made from another scan (another suffix or model run
            into the same folder).
    """
    summary = read_json(findings / "summary.json")
    # Not resolved: in a DataLad dataset every file is a symbolic link into the annex.
    source = f"bids:raw:{Path(os.path.relpath(os.path.abspath(scan.path), os.path.abspath(bids_dir))).as_posix()}"
    common = {
        "Sources": [source],
        "Model": _model_name(summary["model"], findings, out),
        "ModelWeightsSHA256": summary["model"]["weights_sha256"],
        "Threshold": summary["threshold"],
        "ThresholdSource": summary["threshold_source"],
        "ScanScore": summary["scan_score"],
        "Report": f"findings/{scan.name}/report.html",
    }
    folder = out / scan.folder
    written = []
    grid = Grid.from_dict(summary["preprocessing"]["grid"])
    resolution = round(grid.spacing_mm)
    mni_fields = {"Resolution": f"{resolution} mm isotropic: the model's crop of the template, "
                                f"{'×'.join(map(str, grid.shape))} voxels"}  # fmt: skip
    for relative, name in derivative_names(scan, resolution).items():
        target = folder / name
        sidecar = target.with_name(name.removesuffix(".nii.gz") + ".json")
        if sidecar.is_file() and read_json(sidecar).get("Sources") != [source]:
            raise OutputError(target, f"already holds the derivative of another scan ({read_json(sidecar)['Sources']})")
        description = DERIVATIVES[relative.removeprefix("mni/")][2]
        kind = relative.removeprefix("mni/")
        reference = MNI_SPACE if relative.startswith("mni/") else source  # the model's MNI crop grid, or the scan's
        fields = {"Description": description, **common, **EXTRA_FIELDS.get(kind, {}), "SpatialReference": reference}
        if relative.startswith("mni/"):
            fields.update(mni_fields)
        write_json(sidecar, fields)
        _link(findings / relative, target)
        written += [target, sidecar]
    return written


def run_participant(
    bids_dir: str | Path,
    output_dir: str | Path,
    model: str | Path,
    suffix: str | None = None,
    participant_labels: list[str] | None = None,
    session_labels: list[str] | None = None,
    filter_file: str | Path | None = None,
    shard: Shard | None = None,
    threshold: float | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> ParticipantResult:
    """Detect anomalies on the selected scans of a BIDS dataset and write them as BIDS derivatives.

    Args:
        bids_dir: The BIDS dataset (read only).
        output_dir: The derivatives folder (not the dataset; inside it only under ``derivatives/``).
        model: Trained run folder or ``builtin:NAME``.
        suffix: ``T1w``, ``T2w`` or ``FLAIR``; default: the one the model was trained on.
        participant_labels: Participants to do (with or without ``sub-``); default all.
        session_labels: Sessions to do; default all.
        filter_file: fMRIPrep-style ``--bids-filter-file`` (entity filters per suffix).
        shard: Do only this shard of the selected scans.
        threshold: Segmentation threshold; ``None`` = the calibrated one.
        device: ``auto``, ``cpu`` or ``cuda``.
        force: Redo finished scans.
        progress: Show a progress bar.

    Raises:
        InputError: Not a BIDS dataset, unknown participant, no matching scan, two scans with one output name.
        OutputError: The output folder is (inside) the dataset, or holds another tool's dataset.
    """
    from brainuad.infer.detect import detect_batch

    root = check_dataset(bids_dir)
    out = check_output_dir(root, output_dir)
    suffix = suffix or default_suffix(model)
    scans = select_scans(root, suffix, participant_labels, session_labels, read_filter_file(filter_file, suffix))
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_description(out, root)
    by_path = {scan.path: scan for scan in scans}
    batch = detect_batch(
        list(by_path),
        model,
        out / "findings",
        threshold,
        device=device,
        force=force,
        progress=progress,
        shard=shard,
        names={path: scan.name for path, scan in by_path.items()},
    )
    result = ParticipantResult(failed=list(batch.failed))
    by_name = {scan.name: scan for scan in scans}
    for findings, outcome in [(f, result.done) for f in batch.done] + [(f, result.skipped) for f in batch.skipped]:
        scan = by_name[Path(findings).name]
        try:
            export_scan(scan, Path(findings), out, root)
            outcome.append(scan)
        except BrainuadError as exc:
            result.failed.append((scan.path, str(exc)))
        except Exception as exc:  # keep the batch going; report the unexpected error with its file
            result.failed.append((scan.path, f"{scan.path}: unexpected {type(exc).__name__}: {exc}"))
    return result
