"""Which variants of the compiled training step pay, and where its time goes (issue #18), on one device.

Usage (from the repository root; ``benchmarks/gpu_check.sh`` runs it after ``train_throughput.py``):
    python benchmarks/step_variants.py                  # GPU: the paper's network at 160x192x96, batch 8
    python benchmarks/step_variants.py --shape 32 32 16 --batch-size 2 --steps 2 --warmup 1 --channels 4 8 8 8 \\
        --stem-channels 4 --latent 16 --no-compile     # CPU dry run at reduced size

Rows, each appended to ``OUT/results.jsonl`` and ``OUT/table.md`` as soon as it is measured (cheapest first, so a run
stopped by its time limit keeps them):

- ``profile``: the bf16 channels-last step (compiled unless ``--no-compile``) under ``torch.profiler``: the share of
  device time spent in convolutions (forward and backward, attributed to their aten ops), and the **ceiling** that
  share implies — the volume-steps/s the step would reach if everything but the convolutions took no time. A
  target above the ceiling cannot be met by fusing the rest (normalisation, activations, the optimiser).
- ``variant`` rows, each against the same run's compiled step with PyTorch's default Adam: fused Adam; twice the
  batch; ``torch.compile`` modes ``reduce-overhead`` (CUDA graphs) and ``max-autotune-no-cudagraphs``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (
    Report,
    _reset_peak,
    _sync,
    add_network_arguments,
    attempt,
    make_step,
    network_path,
    setup_device,
    time_steps,
)

#: Profiler rows whose time counts as convolution: aten's convolution ops (cuDNN's kernels are launched inside them).
CONV_OPS = ("convolution", "conv3d", "conv_transpose3d")


def conv_profile(args, device, compile_model: bool) -> dict:
    """The share of the step's time in convolutions and the throughput ceiling it implies."""
    from torch.profiler import ProfilerActivity, profile

    _reset_peak(device)
    step = make_step(args, device, True, True, compile_model)
    _, step_s = time_steps(step, args, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.profile_steps):
            step()
        _sync(device)
        profiled_s = (time.perf_counter() - start) / args.profile_steps
    cuda = device.type == "cuda"
    conv_us = 0.0
    for event in prof.key_averages():
        if event.key.startswith("aten::") and any(word in event.key for word in CONV_OPS):
            # Self time only: aten::convolution calls aten::_convolution calls aten::cudnn_convolution, and each
            # kernel is attributed to exactly one of them.
            # ``self_device_time_total`` (PyTorch >= 2.4) was ``self_cuda_time_total`` before.
            device_us = getattr(event, "self_device_time_total", None)
            conv_us += (
                (device_us if device_us is not None else event.self_cuda_time_total)
                if cuda
                else event.self_cpu_time_total
            )
    conv_s = conv_us / 1e6 / args.profile_steps
    return {
        "section": "profile",
        "path": ("bf16 + channels-last" if cuda else "fp32")
        + (" + compile" if compile_model else "")
        + ": convolutions",
        "volume_steps_per_s": round(args.batch_size / step_s, 2),
        "step_ms": round(step_s * 1e3, 2),
        "conv_ms_per_step": round(conv_s * 1e3, 2),
        "profiled_step_ms": round(profiled_s * 1e3, 2),
        "conv_share": round(conv_s / profiled_s, 3),  # both under the profiler (its overhead cancels)
        "ceiling_volume_steps_per_s": round(args.batch_size / conv_s, 1) if conv_s > 0 else None,
        "time_base": "device" if cuda else "CPU",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser, "timed steps per row")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="eager rows only (the compile modes are skipped)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/step_variants"))
    args = parser.parse_args()
    device, name = setup_device(args)
    header = {"device": name, "torch": torch.__version__, "shape": args.shape, "batch_size": args.batch_size,
              "channels": args.channels, "latent": args.latent, "argv": sys.argv[1:]}  # fmt: skip
    report = Report(args.out, header)
    print(f"device: {name}", flush=True)
    compiled = not args.no_compile

    # make_step applies bf16 and channels-last on CUDA only: the labels say what ran.
    base = ("bf16 + channels-last" if device.type == "cuda" else "fp32") + (" + compile" if compiled else "")
    attempt(report, "profile", lambda: conv_profile(args, device, compiled))

    def variant(name: str, compile_model: bool = compiled, **options) -> None:
        path = f"{base}{name}"
        attempt(report, "variant", lambda: network_path(args, device, path, True, True, compile_model, **options),
                section="variant")  # fmt: skip

    variant(" (default Adam)")
    variant(" + fused Adam", fused=True)
    variant(f", batch {args.batch_size * 2}", batch_size=args.batch_size * 2)
    if compiled:
        for mode in ("reduce-overhead", "max-autotune-no-cudagraphs"):
            variant(f", mode {mode}", mode=mode)
    print((args.out / "table.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
