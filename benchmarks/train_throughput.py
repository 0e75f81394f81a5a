"""Training throughput: volume-steps per second and peak memory, fp32 eager reference vs the optimised path.

Usage (from the repository root):
    python benchmarks/train_throughput.py                    # GPU: paper size 160x192x96, batch 8
    python benchmarks/train_throughput.py --shape 64 64 32 --batch-size 2 --steps 5     # CPU, reduced size

Both paths train the same network (the paper's dense autoencoder unless --latent/--channels say otherwise) on random
volumes for --steps steps after --warmup steps. The reference is fp32, eager, channels-first; the optimised path is
bf16 autocast + channels-last-3d (+ torch.compile with --compile) on CUDA. On CPU the two paths coincide except for
compile, so the CPU numbers measure the loop, not the GPU optimisations.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def measure(shape, batch_size, steps, warmup, device, optimised, compile_model, latent, channels) -> dict:
    from brainuad.config import ModelConfig
    from brainuad.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(input_shape=tuple(shape), latent=latent, channels=tuple(channels))).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)
    cuda = device.type == "cuda"
    if optimised and cuda:
        model = model.to(memory_format=torch.channels_last_3d)
    step_model = torch.compile(model) if (optimised and compile_model) else model
    batch = torch.rand(batch_size, 1, *shape, device=device)
    if optimised and cuda:
        batch = batch.contiguous(memory_format=torch.channels_last_3d)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=optimised and cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step():
        with autocast:
            loss = torch.nn.functional.mse_loss(step_model(batch).float(), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.detach())  # one sync at the end, none inside the loop
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 1024**3
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    )
    return {
        "path": "optimised" if optimised else "fp32 eager reference",
        "volume_steps_per_s": round(steps * batch_size / seconds, 2),
        "peak_memory_gib": round(peak, 2),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 96])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--channels", type=int, nargs=4, default=[32, 64, 128, 256])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on GPU)")
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    common = dict(
        shape=args.shape,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        device=device,
        compile_model=args.compile,
        latent=args.latent,
        channels=args.channels,
    )
    reference = measure(optimised=False, **common)
    optimised = measure(optimised=True, **common)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    ratio = optimised["volume_steps_per_s"] / reference["volume_steps_per_s"]
    print(
        json.dumps(
            {
                "device": name,
                "shape": args.shape,
                "batch_size": args.batch_size,
                "torch": torch.__version__,
                "reference": reference,
                "optimised": optimised,
                "speedup": round(ratio, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
