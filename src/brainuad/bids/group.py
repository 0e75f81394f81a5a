"""``brainuad bids BIDS_DIR OUTPUT_DIR group``: one table and one triage page over the participant-level results.

``group/brainuad_scans.tsv`` has a row per scan (participant, session, suffix, scan score, its percentile among the
healthy calibration scans, number and volume of findings, the report) and ``group/brainuad_triage.html`` shows every
scan sorted by score, most abnormal first, each with a thumbnail of its most abnormal axial slice. Both are written
atomically (and listed in ``.bidsignore``).
"""

from __future__ import annotations

import csv
import html
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainuad.bids.layout import Scan, check_dataset, check_output_dir, read_filter_file, select_scans
from brainuad.bids.participant import default_suffix
from brainuad.errors import InputError
from brainuad.io.files import atomic_path, read_json

COLUMNS = (
    "participant_id",
    "session_id",
    "suffix",
    "scan_score",
    "scan_score_percentile_vs_healthy",
    "lesion_count",
    "lesion_volume_ml",
    "report",
)


@dataclass
class GroupResult:
    """The group outputs, the rows (most abnormal first) and the selected scans with no participant-level result."""

    table: Path
    page: Path
    rows: list[dict] = field(default_factory=list)
    missing: list[Scan] = field(default_factory=list)


def _row(scan: Scan, summary: dict) -> dict:
    percentile = summary.get("scan_score_percentile_vs_healthy")
    return {
        "participant_id": f"sub-{scan.subject}",
        "session_id": f"ses-{scan.session}" if scan.session else "n/a",
        "suffix": scan.suffix,
        "scan_score": f"{summary['scan_score']:.6g}",
        "scan_score_percentile_vs_healthy": "n/a" if percentile is None else f"{percentile:.1f}",
        "lesion_count": str(summary.get("lesion_count", 0)),
        "lesion_volume_ml": f"{summary.get('lesion_volume_ml_native', 0.0):.4g}",
        "report": f"findings/{scan.name}/report.html",
    }


def _thumbnail(scan: Scan, findings: Path) -> str:
    """Base64 PNG of the scan's axial slice with the largest summed anomaly, the map overlaid."""
    import base64

    import nibabel as nib

    from brainuad.report.thumbnails import plot_thumbnail

    image = np.asanyarray(nib.as_closest_canonical(nib.load(str(scan.path))).dataobj, dtype=np.float32)
    anomaly = np.asanyarray(nib.as_closest_canonical(nib.load(str(findings / "anomaly_map.nii.gz"))).dataobj)
    image, anomaly = image.reshape(image.shape[:3]), anomaly.reshape(anomaly.shape[:3])
    z = int(np.argmax(anomaly.sum(axis=(0, 1))))
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_thumbnail(image[:, :, z], anomaly[:, :, z], Path(tmp) / "thumb.png", f"axial slice {z}")
        return base64.b64encode(png.read_bytes()).decode("ascii")


def _page(rows: list[dict], thumbnails: list[str], missing: list[Scan]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("rank", "thumbnail", *COLUMNS[:-1], "report"))
    body = []
    for rank, (row, thumb) in enumerate(zip(rows, thumbnails), start=1):
        cells = [str(rank), f"<img alt='most abnormal slice' src='data:image/png;base64,{thumb}'>"]
        cells += [html.escape(row[c]) for c in COLUMNS[:-1]]
        cells.append(f"<a href='../{html.escape(row['report'])}'>report</a>")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = (
        f"<p>{len(missing)} selected scan(s) have no participant-level result yet: "
        + html.escape(", ".join(s.name for s in missing[:20]))
        + ("…" if len(missing) > 20 else "")
        + "</p>"
        if missing
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>brainuad triage</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:4px 6px}</style></head><body><h1>brainuad triage</h1>"
        "<p><b>Research tool, not a medical device.</b> Scans sorted by scan score (99.9th percentile of the "
        "anomaly map in the brain), most abnormal first; the thumbnail is the axial slice with the most anomaly.</p>"
        f"{note}<table><tr>{head}</tr>{''.join(body)}</table></body></html>\n"
    )


def run_group(
    bids_dir: str | Path,
    output_dir: str | Path,
    model: str | Path,
    suffix: str | None = None,
    participant_labels: list[str] | None = None,
    session_labels: list[str] | None = None,
    filter_file: str | Path | None = None,
) -> GroupResult:
    """Write the group table and triage page over the selected scans' participant-level results.

    Raises:
        InputError: Not a BIDS dataset, unknown participant, no matching scan, or no scan with a result yet.
        OutputError: The output folder is (inside) the dataset.
    """
    root = check_dataset(bids_dir)
    out = check_output_dir(root, output_dir)
    suffix = suffix or default_suffix(model)
    scans = select_scans(root, suffix, participant_labels, session_labels, read_filter_file(filter_file, suffix))
    found, missing = [], []
    for scan in scans:
        findings = out / "findings" / scan.name
        if (findings / "summary.json").is_file() and (findings / "anomaly_map.nii.gz").is_file():
            found.append((scan, findings, read_json(findings / "summary.json")))
        else:
            missing.append(scan)
    if not found:
        raise InputError(out, "no participant-level result for the selected scans: run the participant level first")
    found.sort(key=lambda item: (-item[2]["scan_score"], item[0].name))
    rows = [_row(scan, summary) for scan, _, summary in found]
    thumbnails = [_thumbnail(scan, findings) for scan, findings, _ in found]
    table, page = out / "group" / "brainuad_scans.tsv", out / "group" / "brainuad_triage.html"
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(table) as tmp:
        tmp.write_text(text.getvalue())
    with atomic_path(page) as tmp:
        tmp.write_text(_page(rows, thumbnails, missing))
    return GroupResult(table, page, rows, missing)
