"""Does the quick recipe learn individual anatomy? Held-out real healthy T1 individuals, MSE inside the brain.

Usage (from the repository root; preprocessed case folders of the 52 real healthy T1 individuals at paper-2mm):
    python benchmarks/recipe_t1.py split --data PREP --out benchmarks/out/t1_split     # links per split
    python benchmarks/recipe_t1.py explore --data PREP --steps 300 --mean-skip --loss-mask ...
    python benchmarks/recipe_t1.py evaluate --data PREP --run RUN_DIR

``explore`` trains one recipe variant with a small loop of its own (the product's network, ``build_model``) and
reports validation MSE — the split's validation subjects choose the variant; test subjects are only scored by
``evaluate``. ``evaluate`` scores a ``brainuad train`` run folder on the split's test (and validation) subjects:
MSE inside each scan's brain mask of (a) the model's reconstruction, (b) the training cohort's mean image (a model
that learned nothing individual does no better), (c) the nearest training individual (the training scan with the
lowest MSE to the held-out scan: an oracle reference). Split: ``benchmarks/splits/t1_2mm.json`` (subject ids).
Process CPU time (``resource.getrusage``: all threads) is reported with wall time: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import time
from pathlib import Path

import numpy as np

SPLIT = Path(__file__).resolve().parent / "splits" / "t1_2mm.json"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_split(data: Path) -> dict[str, list[Path]]:
    """Case folders of ``data`` per split (train/val/test) by IXI subject id; every case must be listed once."""
    split = json.loads(SPLIT.read_text())
    where = {subject: part for part in ("train", "val", "test") for subject in split[part]}
    out: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for folder in sorted(p for p in data.iterdir() if (p / "image.nii.gz").is_file()):
        match = re.match(r"IXI\d{3}", folder.name)
        if not match or match[0] not in where:
            raise SystemExit(f"{folder}: subject not in {SPLIT}")
        out[where[match[0]]].append(folder)
    return out


def load_arrays(folders: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from brainuad.io.volumes import load_volume

    images = np.stack([load_volume(f / "image.nii.gz").array.astype(np.float32) for f in folders])
    masks = np.stack([load_volume(f / "brain_mask.nii.gz").array > 0.5 for f in folders])
    return images, masks


def masked_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean((a[mask] - b[mask]) ** 2))


def references(images: np.ndarray, masks: np.ndarray, train_images: np.ndarray) -> dict[str, list[float]]:
    """Per held-out scan: the mean image's and the nearest training scan's MSE inside its brain."""
    from brainuad.models.cohort import cohort_mean

    mean = cohort_mean(train_images)
    mean_mse = [masked_mse(x, mean, m) for x, m in zip(images, masks)]
    nearest = [min(masked_mse(x, t, m) for t in train_images) for x, m in zip(images, masks)]
    return {"mean_image": mean_mse, "nearest_training": nearest}


def reconstruct(model, images: np.ndarray, batch: int = 4) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(torch.from_numpy(images[i : i + batch])[:, None]).numpy()[:, 0])
    return np.concatenate(out)


def intensity_augment(batch, masks, generator):
    """Brightness ×0.8–1.2 and gamma 0.75–1.33 per volume, inside the brain (the IXI contrast varies by site)."""
    import torch

    n = batch.shape[0]
    scale = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, 1, generator=generator)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, 1, generator=generator) - 0.5) * 2 * math.log(1.33))
    changed = (batch.clamp(0, 1) ** gamma * scale).clamp(0, 1)
    return torch.where(masks, changed, batch)


def explore(args: argparse.Namespace) -> dict:
    import torch

    from brainuad.config import ModelConfig
    from brainuad.models import build_model, count_parameters
    from brainuad.models.cohort import cohort_mean

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    parts = load_split(args.data)
    train_x, train_m = load_arrays(parts["train"])
    val_x, val_m = load_arrays(parts["val"])
    config = ModelConfig(
        kind=args.kind,
        latent=args.latent,
        spatial_channels=args.spatial_channels,
        stem_channels=args.stem,
        channels=tuple(args.channels),
        input_shape=tuple(train_x.shape[1:]),
        mean_skip=args.mean_skip,
        norm=args.norm,
        input_pool=args.pool,
    )
    model = build_model(config)
    if args.mean_skip:
        model.set_mean_image(torch.from_numpy(cohort_mean(train_x)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        if args.schedule == "cosine":
            progress = (step - args.warmup) / max(1, args.steps - args.warmup)
            return args.lr * 0.5 * (1 + math.cos(math.pi * progress))
        return args.lr

    generator = torch.Generator().manual_seed(args.seed)
    refs = references(val_x, val_m, train_x)
    x_all = torch.from_numpy(train_x)[:, None]
    m_all = torch.from_numpy(train_m)[:, None]
    best = {"val_mse": math.inf, "step": 0}
    history = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        model.train()
        ids = torch.randint(len(train_x), (args.batch,), generator=generator)
        batch, mask = x_all[ids], m_all[ids]
        if args.augment:
            batch = intensity_augment(batch, mask, generator)
        out = model(batch)
        loss = ((out - batch) ** 2)[mask].mean() if args.loss_mask else torch.nn.functional.mse_loss(out, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            recon = reconstruct(model, val_x)
            val = float(np.mean([masked_mse(x, r, m) for x, r, m in zip(val_x, recon, val_m)]))
            row = {
                "step": step + 1,
                "loss": float(loss),
                "val_mse": val,
                "cpu_s": round(cpu_seconds() - cpu0, 1),
                "wall_s": round(time.perf_counter() - wall0, 1),
            }
            history.append(row)
            print(json.dumps(row), flush=True)
            if val < best["val_mse"]:
                best = {"val_mse": val, "step": step + 1}
    mean_val = float(np.mean(refs["mean_image"]))
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "parameters": count_parameters(model),
        "volume_steps": args.steps * args.batch,
        "cpu_s": round(cpu_seconds() - cpu0, 1),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "val_mean_image_mse": mean_val,
        "val_nearest_training_mse": float(np.mean(refs["nearest_training"])),
        "best_val_mse": best["val_mse"],
        "best_step": best["step"],
        "final_val_mse": history[-1]["val_mse"],
        "final_over_mean": history[-1]["val_mse"] / mean_val,
        "history": history,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


def evaluate(args: argparse.Namespace) -> dict:
    """Score a ``brainuad train`` run on the split's held-out subjects."""
    import torch

    from brainuad.train.checkpoints import load_model

    torch.set_num_threads(args.threads)
    parts = load_split(args.data)
    split_file = json.loads((args.run / "split.json").read_text())
    trained = {Path(p).name for p in split_file["train"]}
    leaked = sorted(trained & {p.name for p in parts["val"] + parts["test"]})
    if leaked:
        raise SystemExit(f"{args.run} trained on held-out subjects: {leaked}")
    train_x, _ = load_arrays([f for f in parts["train"] if f.name in trained])
    model, _ = load_model(args.run)
    result: dict = {"run": str(args.run), "train_cases": len(train_x)}
    for part in ("val", "test"):
        x, m = load_arrays(parts[part])
        refs = references(x, m, train_x)
        recon = reconstruct(model, x)
        model_mse = [masked_mse(a, r, mm) for a, r, mm in zip(x, recon, m)]
        cases = [
            {"case": f.name, "model": a, "mean_image": b, "nearest_training": c}
            for f, a, b, c in zip(parts[part], model_mse, refs["mean_image"], refs["nearest_training"])
        ]
        summary = {k: float(np.mean([c[k] for c in cases])) for k in ("model", "mean_image", "nearest_training")}
        summary["model_over_mean"] = summary["model"] / summary["mean_image"]
        summary["cases_better_than_mean"] = sum(c["model"] < c["mean_image"] for c in cases)
        result[part] = {"summary": summary, "cases": cases}
    summary_file = args.run / "summary.json"
    if summary_file.is_file():
        result["train_summary"] = json.loads(summary_file.read_text())
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


def link_split(args: argparse.Namespace) -> None:
    """``OUT/{train,val,test}/``: links to the case folders of each split, for ``brainuad train --data/--val-data``."""
    for part, folders in load_split(args.data).items():
        folder = args.out / part
        folder.mkdir(parents=True, exist_ok=True)
        for case in folders:
            link = folder / case.name
            if not link.exists():
                link.symlink_to(case.resolve())
        print(f"{part}: {len(folders)} cases -> {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explore")
    ex.add_argument("--data", type=Path, required=True)
    ex.add_argument("--out", type=Path)
    ex.add_argument("--kind", default="ae", choices=["ae", "spatial-ae"])
    ex.add_argument("--latent", type=int, default=256)
    ex.add_argument("--spatial-channels", type=int, default=16)
    ex.add_argument("--stem", type=int, default=8)
    ex.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    ex.add_argument("--pool", type=int, default=2)
    ex.add_argument("--norm", default="batch", choices=["batch", "group"])
    ex.add_argument("--mean-skip", action="store_true")
    ex.add_argument("--loss-mask", action="store_true")
    ex.add_argument("--augment", action="store_true")
    ex.add_argument("--lr", type=float, default=1e-3)
    ex.add_argument("--weight-decay", type=float, default=1e-5)
    ex.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    ex.add_argument("--warmup", type=int, default=20)
    ex.add_argument("--steps", type=int, default=300)
    ex.add_argument("--batch", type=int, default=4)
    ex.add_argument("--eval-every", type=int, default=50)
    ex.add_argument("--threads", type=int, default=1)
    ex.add_argument("--seed", type=int, default=0)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--run", type=Path, required=True)
    ev.add_argument("--out", type=Path)
    ev.add_argument("--threads", type=int, default=1)
    sp = sub.add_parser("split")
    sp.add_argument("--data", type=Path, required=True)
    sp.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    {"explore": explore, "evaluate": evaluate, "split": link_split}[args.command](args)


if __name__ == "__main__":
    main()
