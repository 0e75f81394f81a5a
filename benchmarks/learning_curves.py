"""Held-out-task AP against CPU-seconds (issue #33): the ``segment`` runs of benchmarks/lesions.py (their
``learning_curve.json``) and ``restore`` on the same validation scans.

Usage (from the repository root, after ``lesions.py train t2 segment`` and ``lesions.py train t1 segment-cr``):
    python benchmarks/learning_curves.py      # docs/figures/learning_curves.png + benchmarks/out/learning_curves.json

``restore`` kept only its final weights (builtin:t2 is the restore run of the T2 track): it is one point, at the CPU
seconds its card states, scored the way restore detects (|x − restored x|) on the held-out task planted with the
same seed in the same validation scans as the T2 ``segment`` run's. The held-out task is the gradient-domain blend
(``poisson``): neither model trained on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "lesions"
RUNS = {"segment (T2 track)": OUT / "t2" / "runs" / "segment",
        "segment, contrast-randomised (real IXI T1)": OUT / "t1" / "runs" / "segment-cr"}  # fmt: skip
#: builtin:t2's training CPU seconds, as its model card states (the sum of its epochs over its resumed runs).
RESTORE_CPU_SECONDS = 2548.0


def restore_point(run: Path) -> dict:
    """builtin:t2 (restore) scored on the held-out task in ``run``'s validation scans (the same seed)."""
    import numpy as np
    import torch

    from brainuad.infer.trained import TrainedModel
    from brainuad.io.volumes import load_volume, read_json
    from brainuad.models.segment import heldout_batch, label_ap
    from brainuad.train.checkpoints import load_config

    config = load_config(run / "config.json")
    split = read_json(run / "split.json")
    val = [Path(p) if Path(p).is_absolute() else run / p for p in split["val"]]
    x = torch.from_numpy(np.stack([load_volume(p / "image.nii.gz").array for p in val]).astype(np.float32))[:, None]
    labels, corrupted = heldout_batch(x, config.model.options, seed=config.training.seed + 1)
    restore = TrainedModel.load("builtin:t2", "cpu").model.eval()
    with torch.no_grad():
        scores = torch.cat([(corrupted[i : i + 1] - restore(corrupted[i : i + 1])).abs() for i in range(len(x))])
    return {"cpu_seconds": RESTORE_CPU_SECONDS, "heldout_ap": label_ap(scores, labels, corrupted > 0)}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: json.loads((run / "learning_curve.json").read_text()) for name, run in RUNS.items()
              if (run / "learning_curve.json").is_file()}  # fmt: skip
    t2 = RUNS["segment (T2 track)"]
    restore = restore_point(t2) if (t2 / "split.json").is_file() else None
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        points = curve["points"]
        axis.plot([p["cpu_seconds"] for p in points], [p["heldout_ap"] for p in points], marker=".", label=name)
    if restore:
        axis.scatter([restore["cpu_seconds"]], [restore["heldout_ap"]], color="black", marker="x", s=60, zorder=3,
                     label="restore = builtin:t2 (final weights only)")  # fmt: skip
    axis.set_xlabel("training CPU-seconds (2-core machine)")
    axis.set_ylabel("held-out-task AP (poisson blend, validation scans)")
    axis.set_title("Learning curves on the held-out synthetic task")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    target = ROOT / "docs" / "figures" / "learning_curves.png"
    figure.savefig(target, dpi=110)
    result = {"curves": curves, "restore": restore}
    (ROOT / "benchmarks" / "out" / "learning_curves.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({n: {"best": c.get("best_heldout_ap"), "at_step": c.get("best_step"),
                          "cpu_seconds_last": c["points"][-1]["cpu_seconds"]} for n, c in curves.items()}))  # fmt: skip
    print("restore", restore)
    return 0


if __name__ == "__main__":
    sys.exit(main())
