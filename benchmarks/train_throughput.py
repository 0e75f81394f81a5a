"""Training throughput: the network alone (three paths), augmentation, the real training loop, and inference.

Usage (from the repository root):
    python benchmarks/train_throughput.py                 # GPU: network paths at 160x192x96, batch 8
    python benchmarks/train_throughput.py --loop          # + augmentation, brainuad's train() on synthetic cases with
                                                          #   augmentation on and off, and bf16 inference
    python benchmarks/train_throughput.py --loop --shape 32 32 16 --batch-size 2 --steps 2 --channels 4 8 8 8 \\
        --stem-channels 4 --latent 16 --cases 6           # CPU dry run at reduced size

Sections (``--sections``, or all of them with ``--loop``):

- ``network``: one optimisation step of the paper's network on random volumes, ``--steps`` steps after ``--warmup``:
  fp32 eager channels-first (the reference), bf16 autocast + channels-last-3d eager, and the same + torch.compile.
  On CPU bf16 and channels-last do not apply: the paths coincide except for compile.
- ``augmentation``: the batched Augmenter per volume on the device, next to MONAI's per-volume pipeline (if installed).
- ``loop``: ``brainuad.train.loop.train`` itself on ``--cases`` synthetic preprocessed cases (written once),
``--epochs``
  epochs of ``--steps`` steps, validation after the last epoch only, compile as train() defaults (on CUDA); with
  augmentation off and on. Throughput is taken from the epochs between the first (warm-up, compilation) and the last
  (validation, checkpoint); the total wall time of train() is reported too.
- ``inference``: ``brainuad.infer.inference.reconstruct`` (bf16 on CUDA) and ``detect_case`` (reconstruction +
  post-processing) per preprocessed volume, random weights.

Every result is appended to ``OUT/results.jsonl`` and the table ``OUT/table.md`` is rewritten as soon as it is known,
so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class Report:
    """Rows of results, appended to ``results.jsonl`` and rendered to ``table.md`` after every row."""

    def __init__(self, out: Path, header: dict):
        self.out, self.header, self.rows = out, header, []
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.jsonl").write_text(json.dumps({"header": header}) + "\n")

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.out / "results.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        self.render()

    def render(self) -> None:
        h = self.header
        lines = [
            f"device: {h['device']} · torch {h['torch']} · shape {h['shape']} · batch {h['batch_size']} · "
            f"network channels {h['channels']} latent {h['latent']}",
            "",
            "| section | path | volume-steps/s | × fp32 eager | other | peak memory GiB |",
            "|---|---|---|---|---|---|",
        ]
        reference = next((r["volume_steps_per_s"] for r in self.rows if r.get("path") == "fp32 eager"), None)
        for row in self.rows:
            rate = row.get("volume_steps_per_s")
            ratio = f"{rate / reference:.2f}" if rate and reference else ""
            other = "; ".join(f"{k} {v}" for k, v in row.items() if k not in ("section", "path", "volume_steps_per_s",
                                                                                "peak_gib"))  # fmt: skip
            lines.append(
                f"| {row['section']} | {row['path']} | {rate if rate is not None else ''} | {ratio} | {other} | "
                f"{row.get('peak_gib', '')} |"
            )
        (self.out / "table.md").write_text("\n".join(lines) + "\n")


def _model_config(args, shape):
    from brainuad.config import ModelConfig

    return ModelConfig(
        input_shape=tuple(shape),
        latent=args.latent,
        channels=tuple(args.channels),
        stem_channels=args.stem_channels,
        input_pool=args.input_pool,
    )


def make_step(
    args, device, bf16: bool, channels_last: bool, compile_model: bool, fused=None, mode=None, batch_size=None
):
    """One optimisation step of the network on one random batch (no data loading, no augmentation), as a function.

    ``fused``: Adam's fused kernel (``None``: PyTorch's default); ``mode``: the ``torch.compile`` mode.
    """
    from brainuad.models import build_model

    torch.manual_seed(0)
    model = build_model(_model_config(args, args.shape)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5, fused=fused)
    cuda = device.type == "cuda"
    if channels_last and cuda:
        model = model.to(memory_format=torch.channels_last_3d)
    step_model = torch.compile(model, dynamic=False, mode=mode) if compile_model else model
    batch = torch.rand(batch_size or args.batch_size, 1, *args.shape, device=device)
    if channels_last and cuda:
        batch = batch.contiguous(memory_format=torch.channels_last_3d)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and cuda)

    def step():
        with autocast:
            loss = torch.nn.functional.mse_loss(step_model(batch).float(), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def network_path(args, device, name: str, bf16: bool, channels_last: bool, compile_model: bool, **variant) -> dict:
    """Steps of the bare network on one random batch (no data loading, no augmentation); ``variant``: make_step's."""
    _reset_peak(device)
    step = make_step(args, device, bf16, channels_last, compile_model, **variant)
    batch_size = variant.get("batch_size") or args.batch_size
    warmup_s, step_s = time_steps(step, args, device)
    row = {
        "section": "network",
        "path": name,
        "volume_steps_per_s": round(batch_size / step_s, 2),
        "warmup_s": round(warmup_s, 1),
        "peak_gib": _peak_gib(device),
    }
    return row


def time_steps(step, args, device) -> tuple[float, float]:
    """``args.warmup`` steps, then ``args.steps`` timed ones: (warm-up seconds, seconds per timed step)."""
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss.detach())  # one sync at the end, none inside the loop
    return warmup_s, (time.perf_counter() - start) / args.steps


def augmentation_rows(args, device) -> list[dict]:
    """Milliseconds per volume: the batched Augmenter on ``device``; MONAI's pipeline one volume at a time."""
    from brainuad.data.augmentation import Augmenter, MonaiAugmenter
    from brainuad.seeds import batch_seed

    volume = torch.from_numpy(_synthetic_image(args.shape, np.random.default_rng(0)))[None, None].to(device)
    batch = volume.repeat(args.batch_size, 1, 1, 1, 1)
    augmenter = Augmenter()
    seeds = [[batch_seed(0, rep, 0, i, i) for i in range(args.batch_size)] for rep in range(args.augment_reps + 1)]
    augmenter(batch, seeds[0])  # warm-up (constant tables, kernels)
    _sync(device)
    cpu, start = time.process_time(), time.perf_counter()
    for rep in range(1, args.augment_reps + 1):
        out = augmenter(batch, seeds[rep])
    _sync(device)
    count = args.augment_reps * args.batch_size
    rows = [
        {
            "section": "augmentation",
            "path": "batched Augmenter (brainuad)",
            "ms_per_volume": round((time.perf_counter() - start) / count * 1000, 2),
            "cpu_ms_per_volume": round((time.process_time() - cpu) / count * 1000, 2),
            "volumes": count,
            "brain_mean_after": round(float(out[out > 0].mean()), 4),
        }
    ]
    try:
        reference = MonaiAugmenter()
    except ImportError as exc:
        rows.append({"section": "augmentation", "path": "MONAI per volume", "skipped": f"{exc}"})
        return rows
    reference(volume[0], 1)
    _sync(device)
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(args.monai_volumes):
        reference(volume[0], i)
    _sync(device)
    rows.append(
        {
            "section": "augmentation",
            "path": "MONAI per volume (before)",
            "ms_per_volume": round((time.perf_counter() - start) / args.monai_volumes * 1000, 2),
            "cpu_ms_per_volume": round((time.process_time() - cpu) / args.monai_volumes * 1000, 2),
            "volumes": args.monai_volumes,
        }
    )
    return rows


def _synthetic_image(shape, rng) -> np.ndarray:
    """A smooth ellipsoidal 'brain' with random contrast and texture, zero outside (float32 in [0, 1])."""
    coords = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    radius = coords[0] ** 2 / 0.8 + coords[1] ** 2 / 0.85 + coords[2] ** 2 / 0.8
    texture = 0.5 + 0.15 * np.cos(6 * coords[0] + rng.random()) * np.sin(5 * coords[1] + rng.random())
    return np.where(radius < 1, texture * (0.8 + 0.4 * rng.random()), 0).astype(np.float32)


def write_cases(folder: Path, n: int, shape) -> Path:
    """``n`` synthetic preprocessed cases (image, brain mask, identity transform) on a 1 mm grid."""
    from brainuad.io.volumes import Volume
    from brainuad.preprocess.pipeline import PreprocessedCase, save_case
    from brainuad.preprocess.registration import Transform
    from brainuad.preprocess.templates import Grid

    rng = np.random.default_rng(0)
    grid = Grid("synthetic", tuple(shape), tuple(tuple(map(float, r)) for r in np.eye(4)))
    for i in range(n):
        image = _synthetic_image(shape, rng)
        case = PreprocessedCase(
            f"case{i:03d}",
            Volume(image, np.eye(4)),
            Volume(image > 0, np.eye(4)),
            Transform(np.eye(4), np.eye(4), tuple(shape), ("R", "A", "S")),
            grid,
            {"name": f"case{i:03d}"},
        )
        save_case(case, folder / case.name)
    return folder


def loop_row(args, device, data: Path, runs: Path, augment: str) -> dict:
    """brainuad's train() end to end; throughput from the epochs between the first and the last."""
    from brainuad.config import Config, TrainConfig
    from brainuad.train.loop import train
    from brainuad.train.step import compile_enabled

    _reset_peak(device)
    config = Config(
        model=_model_config(args, args.shape),
        training=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            steps_per_epoch=args.steps,
            augment=augment,
            device=device.type,
            val_fraction=args.val_cases / args.cases,
            val_every=args.epochs,
        ),
    )
    cpu, start = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train([data], runs / f"augment_{augment}", config, progress=False)
    total = time.perf_counter() - start
    compile_failed = [str(w.message)[:200] for w in caught if "torch.compile failed" in str(w.message)]
    rows = result.history
    steady = rows[1:-1] or rows[-1:]
    volume_steps = args.steps * args.batch_size
    return {
        "section": "loop",
        "path": f"brainuad train, augmentation {augment}",
        "volume_steps_per_s": round(volume_steps * len(steady) / sum(r["seconds"] for r in steady), 2),
        "first_epoch_s": rows[0]["seconds"],
        "last_epoch_with_validation_s": rows[-1]["seconds"],
        "steady_epochs": len(steady),
        "compiled": compile_enabled(config.training, device) and not compile_failed,
        **({"compile_error": compile_failed[0]} if compile_failed else {}),
        "train_total_s": round(total, 1),
        "process_cpu_s": round(time.process_time() - cpu, 1),
        "cpu_s_per_volume_step": round((time.process_time() - cpu) / (volume_steps * args.epochs), 4),
        "peak_gib": _peak_gib(device),
    }


def augmentation_cost_in_loop(rows: list[dict]) -> dict:
    """What augmentation adds to the loop per volume: wall time from the steady epochs, and process CPU time."""
    on = next(r for r in rows if r.get("path") == "brainuad train, augmentation on")
    off = next(r for r in rows if r.get("path") == "brainuad train, augmentation off")
    return {
        "section": "loop",
        "path": "augmentation's share of the loop",
        "epoch_s_per_volume": round(1 / on["volume_steps_per_s"] - 1 / off["volume_steps_per_s"], 4),
        "cpu_s_per_volume": round(on["cpu_s_per_volume_step"] - off["cpu_s_per_volume_step"], 4),
    }


def inference_rows(args, device, case_folder: Path) -> list[dict]:
    """Seconds per preprocessed volume: the network's reconstruction, and detection with post-processing."""
    from brainuad.infer.inference import detect_case, reconstruct
    from brainuad.models import build_model
    from brainuad.preprocess.pipeline import load_case

    torch.manual_seed(0)
    model = build_model(_model_config(args, args.shape)).to(device).eval()
    case = load_case(case_folder)
    rows = []
    for name, run in (
        (
            f"reconstruct ({'bf16 autocast' if device.type == 'cuda' else 'fp32'})",
            lambda: reconstruct(model, case.image.array, device),
        ),
        ("detect_case (reconstruct + post-processing)", lambda: detect_case(model, case, 0.5, device=device)),
    ):
        run()
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.inference_reps):
            run()
        _sync(device)
        seconds = (time.perf_counter() - start) / args.inference_reps
        rows.append({"section": "inference", "path": name, "s_per_volume": round(seconds, 4)})
    return rows


def add_network_arguments(parser: argparse.ArgumentParser, steps_help: str) -> None:
    """The network, batch, timing and device flags this script and ``step_variants.py`` share."""
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 96])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help=steps_help)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128, 256], help="2 to 5 down blocks")
    parser.add_argument("--input-pool", type=int, default=1, choices=(1, 2, 4),
                        help="the network sees the volume pooled by this factor (a tiny network for the loop's "
                        "augmentation share on CPU)")  # fmt: skip
    parser.add_argument("--stem-channels", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on GPU)")


def setup_device(args) -> tuple[torch.device, str]:
    """The device ``--device`` names (``auto``: CUDA when available), set up for timing, and its name."""
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    return device, name


def attempt(report: Report, label: str, produce, section: str | None = None) -> None:
    """Run one measurement and add its rows; a failure (out of memory, a compiler error) becomes a row and does not
    cost the others. ``section``: overrides the rows' own."""
    print(f"[{time.strftime('%H:%M:%S')}] {label} …", flush=True)
    start = time.perf_counter()
    try:
        rows = produce()
    except Exception as exc:
        traceback.print_exc()
        rows = [{"section": label, "path": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}]
    for row in rows if isinstance(rows, list) else [rows]:
        report.add({**row, **({"section": section} if section else {}),
                    "section_wall_s": round(time.perf_counter() - start, 1)})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser, "timed steps (network) / steps per epoch (loop)")
    parser.add_argument("--loop", action="store_true", help="all sections (network, loop, augmentation, inference)")
    parser.add_argument("--sections", help="comma-separated subset of network,loop,augmentation,inference")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled network path")
    parser.add_argument("--cases", type=int, default=16, help="loop: synthetic cases written")
    parser.add_argument("--val-cases", type=int, default=2, help="loop: of which held out for validation")
    parser.add_argument("--epochs", type=int, default=5, help="loop: epochs per train() run")
    parser.add_argument("--augment-reps", type=int, default=4, help="augmentation: timed batches")
    parser.add_argument("--monai-volumes", type=int, default=4, help="augmentation: volumes through MONAI")
    parser.add_argument("--inference-reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/train_throughput"))
    args = parser.parse_args()
    device, name = setup_device(args)
    sections = (
        args.sections.split(",") if args.sections else ["network", "loop", "augmentation", "inference"]
        if args.loop else ["network"]
    )  # fmt: skip
    report = Report(
        args.out,
        {
            "device": name,
            "torch": torch.__version__,
            "shape": args.shape,
            "batch_size": args.batch_size,
            "channels": args.channels,
            "input_pool": args.input_pool,
            "latent": args.latent,
            "sections": sections,
            "argv": sys.argv[1:],
        },
    )
    print(f"device: {name}; sections: {sections}", flush=True)

    # Cheapest and most important first: a run stopped by its time limit keeps the early rows.
    if "augmentation" in sections:
        attempt(report, "augmentation", lambda: augmentation_rows(args, device))
    if "network" in sections:
        attempt(report, "network", lambda: network_path(args, device, "fp32 eager", False, False, False))
    with tempfile.TemporaryDirectory(prefix="brainuad-bench-") as tmp:
        data = Path(tmp) / "cases"
        if "loop" in sections or "inference" in sections:
            start = time.perf_counter()
            write_cases(data, args.cases, args.shape)
            print(f"wrote {args.cases} synthetic cases in {time.perf_counter() - start:.1f} s", flush=True)
        if "loop" in sections:
            attempt(report, "loop", lambda: loop_row(args, device, data, Path(tmp) / "runs", "on"))
            attempt(report, "loop", lambda: loop_row(args, device, data, Path(tmp) / "runs", "off"))
            attempt(report, "loop", lambda: augmentation_cost_in_loop(report.rows))
        if "network" in sections:
            attempt(
                report, "network", lambda: network_path(args, device, "bf16 + channels-last eager", True, True, False)
            )
            if not args.no_compile:
                compiled = "bf16 + channels-last + compile"
                attempt(report, "network", lambda: network_path(args, device, compiled, True, True, True))
        if "inference" in sections:
            attempt(report, "inference", lambda: inference_rows(args, device, data / "case000"))
    print((args.out / "table.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
