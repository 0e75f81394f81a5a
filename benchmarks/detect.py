"""One raw scan end to end — preprocess, inference, post-processing, writing — time and peak memory per stage.

Usage (from the repository root; CI-class machines have 2 cores):
    python benchmarks/detect.py [SCAN] [--preset paper] [--threads 2]

The network is the paper's (≈200 M parameters) with random weights: the time does not depend on what it learned.
Peak memory is the process's maximum resident set size after each stage (it only grows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

DEFAULT_SCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stroke" / "T2_head.nii.gz"


def peak_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scan", nargs="?", default=str(DEFAULT_SCAN))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from brainuad.config import Config, ModelConfig, PreprocessConfig
    from brainuad.infer.detect import write_detection
    from brainuad.infer.inference import detect_case
    from brainuad.infer.trained import TrainedModel
    from brainuad.io.volumes import load_volume
    from brainuad.models import build_model
    from brainuad.preprocess.pipeline import preprocess_volume
    from brainuad.preprocess.templates import crop_grid
    from brainuad.train.checkpoints import save_config, save_weights

    stages = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        grid = crop_grid(args.preset)
        config = Config(preprocessing=PreprocessConfig(preset=args.preset), model=ModelConfig(input_shape=grid.shape))
        model = build_model(config.model).eval()
        save_config(config, run / "config.json")
        save_weights(model, run / "model.safetensors")

        start = time.perf_counter()
        volume = load_volume(args.scan)
        case = preprocess_volume(volume, config.preprocessing)
        stages["preprocess"] = {"s": round(time.perf_counter() - start, 2), "peak_rss_gib": peak_gib()}

        start = time.perf_counter()
        detection = detect_case(model, case, threshold=0.1)
        total_detect = time.perf_counter() - start
        # Split inference from post-processing by timing the network alone once more.
        start = time.perf_counter()
        from brainuad.infer.inference import reconstruct

        reconstruct(model, case.image.array)
        inference = time.perf_counter() - start
        stages["inference"] = {"s": round(inference, 2), "peak_rss_gib": peak_gib()}
        stages["postprocess"] = {"s": round(total_detect - inference, 2), "peak_rss_gib": peak_gib()}

        start = time.perf_counter()
        trained = TrainedModel(run, config, model, torch.device("cpu"), calibration=None)
        write_detection(detection, Path(tmp) / "out", volume, trained)
        stages["write_outputs"] = {"s": round(time.perf_counter() - start, 2), "peak_rss_gib": peak_gib()}
    total = sum(v["s"] for v in stages.values())
    print(
        json.dumps(
            {
                "scan": args.scan,
                "preset": args.preset,
                "threads": args.threads,
                "stages": stages,
                "total_s": round(total, 2),
                "peak_rss_gib": peak_gib(),
            },
            indent=2,
        )
    )
    print(f"target (<= 30 s, <= 4 GiB): {'met' if total <= 30 and peak_gib() <= 4 else 'NOT met'}")


if __name__ == "__main__":
    main()
