"""Which BIDS library should ``brainuad bids`` read datasets with? Start-up time and memory on a large layout.

Builds a 1,000-participant BIDS layout of empty files (T1w, T2w, FLAIR + sidecars; every 4th participant with two
sessions) and, for each library, in a fresh Python process: import it, index the dataset and list the T2w scans.
Prints seconds and peak resident memory (MB). Run with each library installed where Python finds it, e.g.::

    pip install --target /tmp/bidslibs/pybids pybids   # and ancpbids, bids2table
    python benchmarks/bids_libraries.py --root /tmp/bids1000 --paths /tmp/bidslibs/pybids /tmp/bidslibs/ancpbids \
        /tmp/bidslibs/b2t
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROBES = {
    "pybids": "import bids; layout = bids.BIDSLayout(ROOT, validate=False); "
    "n = len(layout.get(suffix='T2w', extension='.nii.gz', return_type='filename'))",
    "ancpbids": "import ancpbids; layout = ancpbids.BIDSLayout(ROOT); "
    "n = len(layout.get(suffix='T2w', extension='.nii.gz', return_type='filename'))",
    "bids2table": "from bids2table import index_dataset; t = index_dataset(ROOT); "
    "n = sum(1 for s, e in zip(t['suffix'].to_pylist(), t['ext'].to_pylist()) if s == 'T2w' and e == '.nii.gz')",
}


def build_layout(root: Path, participants: int) -> None:
    """A BIDS layout of empty image files (the libraries index names, not contents)."""
    if (root / "dataset_description.json").is_file():
        return
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"}))
    lines = ["participant_id\tage"]
    for i in range(1, participants + 1):
        label = f"{i:04d}"
        lines.append(f"sub-{label}\t{20 + i % 60}")
        sessions = ["1", "2"] if i % 4 == 0 else [None]
        for ses in sessions:
            folder = root / f"sub-{label}" / (f"ses-{ses}" if ses else "") / "anat"
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"sub-{label}" + (f"_ses-{ses}" if ses else "")
            for suffix in ("T1w", "T2w", "FLAIR"):
                (folder / f"{stem}_{suffix}.nii.gz").touch()
                (folder / f"{stem}_{suffix}.json").write_text("{}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")


def measure(name: str, probe: str, root: Path, path: str | None) -> dict:
    """Seconds and peak RSS of one fresh process that imports the library and lists the T2w scans."""
    code = (
        "import resource, sys, time\n"
        + (f"sys.path.insert(0, {path!r})\n" if path else "")
        + f"ROOT = {str(root)!r}\nt0 = time.perf_counter()\n{probe}\n"
        + "print(n, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"library": name, "error": done.stderr.strip().splitlines()[-1:]}
    n, seconds, mb = done.stdout.split()[-3:]
    return {"library": name, "scans": int(n), "seconds": round(float(seconds), 2), "peak_mb": round(float(mb))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/bids1000"))
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--paths", nargs="*", default=[], help="folders holding one library each (pip --target)")
    args = parser.parse_args()
    build_layout(args.root, args.participants)
    for name, probe in PROBES.items():
        key = name.split()[0].replace("bids2table", "b2t")
        path = next((p for p in args.paths if Path(p).name in (key, name)), None)
        print(json.dumps(measure(name, probe, args.root, path)), flush=True)


if __name__ == "__main__":
    main()
