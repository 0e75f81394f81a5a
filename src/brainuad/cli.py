"""The ``brainuad`` command: thin verbs over documented functions; heavy imports happen inside each verb."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from brainuad import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODEL_HELP = "a trained model folder, or builtin:NAME for a model shipped with brainuad (see 'brainuad models')"


def _check_exist(paths: Sequence[str], what: str = "file or folder") -> None:
    """Fail fast, before torch and friends are imported (seconds), when an input path does not exist."""
    from brainuad.errors import InputError

    for path in paths:
        if not os.path.exists(path):
            raise InputError(path, f"{what} not found")


def _check_model_folder(path: str) -> None:
    from brainuad.errors import InputError

    if path.startswith("builtin:"):
        return  # a shipped model: resolved (with a clear error for unknown names) where it is loaded
    _check_exist([path], "model folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise InputError(path, "not a brainuad model folder (no config.json): pass the folder 'brainuad train' wrote")


def _device(name: str):
    """The ``--device`` word resolved once, here at the CLI's edge, into the torch.device every API receives."""
    from brainuad.device import resolve_device

    return resolve_device(name)


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="skull-strip, register to MNI, crop and scale raw scans",
        description="Turn raw NIfTI scans into the model's input: one folder per scan under --out with the "
        "preprocessed image, brain mask, transform back to the scan, and a JSON record. Finished scans are "
        "skipped, so an interrupted batch resumes; a failing scan is reported and the others still run.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--skull-strip",
        default="auto",
        choices=["auto", "deepbet", "hd-bet", "template", "none"],
        help="skull stripping method (default: auto = none for skull-stripped input, else deepbet)",
    )
    p.add_argument(
        "--preset",
        default="paper",
        choices=["paper", "whole-brain", "paper-2mm"],
        help="crop: paper = 160x192x96 at 1 mm; whole-brain = 160x208x160; paper-2mm = 80x96x48 at 2 mm "
        "(default: paper)",
    )
    p.add_argument("--registration", default="rigid", choices=["rigid", "affine"], help="default: rigid")
    p.add_argument(
        "--template-contrast",
        default="t1",
        choices=["t1", "t2"],
        help="register to the T1 template or a T2-like one built from its tissue maps (default: t1)",
    )
    p.add_argument("--scaling", default="percentile", choices=["percentile", "minmax"], help="default: percentile")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--force", action="store_true", help="redo scans that are already finished")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from brainuad.config import PreprocessConfig
    from brainuad.preprocessing import preprocess_batch

    if args.jobs < 1:
        raise SystemExit(_usage_error("--jobs must be at least 1"))
    _check_exist(args.inputs)
    config = PreprocessConfig(
        preset=args.preset,
        skull_strip=args.skull_strip,
        registration=args.registration,
        template_contrast=args.template_contrast,
        scaling=args.scaling,
    )
    result = preprocess_batch(args.inputs, args.out, config, jobs=args.jobs, force=args.force, progress=not args.quiet)
    return _report_batch("preprocess", result, args.out)


def _report_batch(verb: str, result, out: str) -> int:
    """Print a batch's counts and each failure (with its file); exit code 1 if any scan failed."""
    print(
        f"{verb}: {len(result.done)} done, {len(result.skipped)} already finished, {len(result.failed)} failed -> {out}"
    )
    for _path, message in result.failed:
        print(f"  failed: {message}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download a public healthy cohort (IXI)",
        description="Download and extract a public data set, resumable and checksum-verified.",
    )
    p.add_argument("dataset", choices=["ixi"], help="data set to download")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--modality", default="T2", choices=["T1", "T2", "PD"], help="default: T2 (as in the paper)")
    p.add_argument("--base-url", default=None, help="mirror URL (default: the IXI project's server)")
    p.add_argument("--md5", default=None, help="expected archive checksum (default: the published one)")
    p.add_argument("--no-extract", action="store_true", help="keep the archive only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from brainuad.download import IXI_BASE_URL, download_ixi

    target = download_ixi(
        args.out,
        args.modality,
        base_url=args.base_url or IXI_BASE_URL,
        md5=args.md5,
        extract=not args.no_extract,
        progress=not args.quiet,
    )
    print(f"download: IXI {args.modality} ready in {target}")
    return EXIT_OK


def _add_model_and_training_options(p: argparse.ArgumentParser) -> None:
    """The model and training flags shared by ``train`` and ``ablate``."""
    p.add_argument(
        "--model",
        default="ae",
        choices=["ae", "spatial-ae", "vae", "dae", "fanogan", "intensity", "normative"],
        help="ae = dense latent (the paper's), spatial-ae = spatial latent; baselines: vae, dae (denoising U-Net), "
        "fanogan (f-AnoGAN, two-stage), intensity (no training: the scaled image is the anomaly map), normative "
        "(no training: voxel-wise centre and spread of the healthy training scans)",
    )
    p.add_argument(
        "--recipe",
        default="paper",
        choices=["paper", "quick"],
        help="paper = Luo et al.'s network and training (default); quick = the CPU recipe measured on real T1 "
        "individuals (benchmarks/README.md): mean-image skip, brain-only loss, cosine learning rate, a network on "
        "the volume pooled ×2. Flags given explicitly override the recipe",
    )
    p.add_argument("--latent", type=int, default=None, help="dense latent size (paper: 512)")
    p.add_argument("--spatial-channels", type=int, default=16, help="spatial latent channels (default: 16)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="vae: weight of the per-voxel KL term")
    p.add_argument("--noise-std", type=float, default=0.2, help="dae: standard deviation of the coarse noise")
    p.add_argument("--noise-scale", type=int, default=8, help="dae: noise grid is this many times coarser")
    p.add_argument("--epochs", type=int, default=None, help="paper: 200")
    p.add_argument("--batch-size", type=int, default=None, help="paper: 8")
    p.add_argument("--lr", type=float, default=None, help="paper: 1e-4")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="0 = one pass over the training scans per epoch; N = N random batches (small cohorts)",
    )
    p.add_argument(
        "--augment", default=None, choices=["auto", "on", "off"], help="auto = on for cohorts under 50 training scans"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the training step (default: on CUDA only)"
    )
    p.add_argument("--no-compile", dest="compile", action="store_false", help="train without torch.compile")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs and after the last (default: 1)")
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="write a resumable checkpoint at most every M minutes and at the end (default: 10; 0 = every epoch)",
    )
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 on the GPU")
    p.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=None,
        metavar="C",
        help="channels of the down blocks (paper: 32 64 128 256); ae/spatial-ae take 2 to 5 blocks",
    )
    p.add_argument("--stem-channels", type=int, default=None, help="paper: 16")
    p.add_argument("--input-pool", type=int, default=None, choices=[1, 2, 4], help="ae: network on the volume pooled")
    p.add_argument("--norm", default=None, choices=["batch", "group"], help="ae: BatchNorm (paper) or GroupNorm")
    p.add_argument(
        "--mean-skip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ae: output = training cohort's mean image + the decoder's deviation from it",
    )
    p.add_argument(
        "--loss-mask", action=argparse.BooleanOptionalAction, default=None, help="loss inside the brain only"
    )
    p.add_argument("--lr-schedule", default=None, choices=["constant", "cosine"], help="paper: constant")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear learning-rate warm-up steps")
    p.add_argument("--normative-centre", default=None, choices=["median", "mean"], help="normative: voxel centre")
    p.add_argument(
        "--normative-score", default=None, choices=["abs", "z"], help="normative: |x - centre| (abs) or z-score"
    )


def _config_from_args(args: argparse.Namespace):
    """The config tree the model and training flags describe: the recipe's, with every flag given on top (raises
    ConfigError on bad values)."""
    from brainuad.config import Config, quick_recipe, replace

    base = quick_recipe() if args.recipe == "quick" else Config()

    def given(**values):  # the flags the user set (None = take the recipe's value)
        return {k: v for k, v in values.items() if v is not None}

    model_kind = args.model
    model_base = base.model if model_kind in ("ae", "spatial-ae") else Config().model  # the recipe is for the AE
    model = replace(
        model_base,
        kind=model_kind,
        **given(
            latent=args.latent,
            stem_channels=args.stem_channels,
            channels=tuple(args.channels) if args.channels else None,
            input_pool=args.input_pool,
            norm=args.norm,
            mean_skip=args.mean_skip,
            normative_centre=args.normative_centre,
            normative_score=args.normative_score,
        ),
        spatial_channels=args.spatial_channels,
        kl_weight=args.kl_weight,
        noise_std=args.noise_std,
        noise_scale=args.noise_scale,
    )
    training = replace(
        base.training,
        **given(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            steps_per_epoch=args.steps_per_epoch,
            augment=args.augment,
            loss_mask=args.loss_mask,
            lr_schedule=args.lr_schedule,
            warmup_steps=args.warmup_steps,
        ),
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        device=args.device,
        seed=args.seed,
        compile=args.compile,
        val_every=args.val_every,
        checkpoint_minutes=args.checkpoint_minutes,
        bf16=not args.no_bf16,
    )
    return Config(model=model, training=training)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the autoencoder on preprocessed healthy scans",
        description="Train on healthy scans only (defaults: the paper's recipe). Writes a self-describing run "
        "folder; --resume continues an interrupted run. Several GPUs: torchrun --nproc_per_node=N -m brainuad train.",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DIR",
        help="folder of preprocessed healthy cases (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument(
        "--val-data",
        action="append",
        default=None,
        metavar="DIR",
        help="preprocessed healthy cases for validation (repeatable); default: --val-fraction of --data, drawn",
    )
    _add_model_and_training_options(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from brainuad.errors import ConfigError
    from brainuad.training import train

    try:
        config = _config_from_args(args)
        if args.resume:
            config = _resume_config(args, config)
    except ConfigError as exc:
        return _usage_error(str(exc))
    result = train(args.data, args.out, config, resume=args.resume, progress=not args.quiet, val_data=args.val_data)
    if int(os.environ.get("RANK", "0")) == 0:
        from brainuad.guard import banner, read_check

        if result.epochs_done:
            print(
                f"train: {result.epochs_done} epochs, best validation MSE {result.best_val_loss:.6f} at epoch "
                f"{result.best_epoch} -> {result.run_dir}"
            )
        else:
            print(f"train: {config.model.kind}: nothing to learn, fitted to the training scans -> {result.run_dir}")
        check = read_check(result.run_dir)
        if check and check.get("beats_mean_image") is not None:
            print(
                f"train: held-out reconstruction MSE inside the brain: model {check['model_mse']:.5f}, cohort mean "
                f"image {check['mean_image_mse']:.5f}, nearest training scan {check['nearest_training_mse']:.5f}"
            )
        warning = banner(result.run_dir)
        if warning:
            print(f"train: {warning}", file=sys.stderr)
    return EXIT_OK


#: Config fields whose flag is named differently (the rest: flag --a-b sets field a_b).
_FLAG_FIELDS = {"model": "kind", "no_bf16": "bf16"}


def _resume_config(args: argparse.Namespace, config):
    """For ``train --resume``: the run's saved settings, overridden only by the flags given on this command line
    (``train`` then refuses any that differ from the run's, naming them)."""
    from pathlib import Path

    from brainuad.checkpoints import load_config
    from brainuad.config import replace

    saved_path = Path(args.out) / "config.json"
    if not saved_path.is_file():
        return config  # train() says there is nothing to resume
    saved = load_config(saved_path)
    # Parse the same command line again with every default suppressed: what remains was typed by the user.
    parser = build_parser()
    train_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train_parser._actions:
        action.default = argparse.SUPPRESS
    given = {_FLAG_FIELDS.get(k, k) for k in vars(parser.parse_args(args.argv))}
    model = {f: getattr(config.model, f) for f in vars(saved.model) if f in given}
    training = {f: getattr(config.training, f) for f in vars(saved.training) if f in given}
    return replace(saved, model=replace(saved.model, **model), training=replace(saved.training, **training))


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit the detection threshold on healthy validation scans",
        description="Fit the anomaly threshold (a voxel false-positive rate on healthy scans) and the "
        "healthy slice/scan references; saved as calibration.json in the model folder.",
    )
    p.add_argument("--model", required=True, metavar="RUN_DIR", help=MODEL_HELP)
    p.add_argument(
        "--healthy",
        action="append",
        default=None,
        metavar="DIR",
        help="preprocessed healthy scans the model was not trained on (repeatable; default: the run's own "
        "validation split, as listed in RUN_DIR/split.json)",
    )
    p.add_argument(
        "--labelled",
        action="append",
        default=None,
        metavar="DIR",
        help="labelled tuning cases (BraTS-/MS-style): threshold = best pooled Dice on them, the paper's way; "
        "never the cases you will report (repeatable)",
    )
    p.add_argument("--modality", default="t2", help="modality of the --labelled case files (default: t2)")
    p.add_argument("--fpr", type=float, default=1e-3, help="healthy voxel false-positive rate (default: 0.001)")
    p.add_argument(
        "--allow-training-scans",
        action="store_true",
        help="accept --healthy scans the model was trained on (its threshold will be too low)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    if not 0 < args.fpr < 1:
        return _usage_error("--fpr must be between 0 and 1")
    _check_model_folder(args.model)
    _check_exist((args.healthy or []) + (args.labelled or []))
    from brainuad.calibrate import calibrate, calibrate_on_labelled
    from brainuad.guard import banner

    warning = banner(args.model)
    if warning:
        print(f"calibrate: {warning}", file=sys.stderr)
    device = _device(args.device)
    if args.healthy or not args.labelled:
        # Without --healthy: the run's own validation split (split.json), scans it was not trained on.
        result = calibrate(
            args.model, args.healthy, args.fpr, device=device, allow_training_scans=args.allow_training_scans
        )
        print(
            f"calibrate: threshold {result.threshold:.5g} at healthy voxel FPR {args.fpr} on "
            f"{result.calibrated_on} -> {args.model}/calibration.json"
        )
        for note in result.notes or ():
            print(f"calibrate: note: {note}")
    if args.labelled:
        result = calibrate_on_labelled(args.model, args.labelled, args.modality, device=device, progress=False)
        print(
            f"calibrate: threshold {result.threshold:.5g} = best pooled Dice {result.tuning_dice:.3f} on "
            f"{len(result.tuning_cases)} labelled tuning cases -> {args.model}/calibration.json"
        )
    return EXIT_OK


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="find anomalies in raw scans with a trained model",
        description="Anomaly maps, reconstructions and segmentations in each scan's own space and in "
        "MNI crop space, per-slice scores and a summary. Finished scans are skipped; one bad scan does "
        "not stop the batch.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI files or folders")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", default="auto", help="'auto' (the calibrated one) or a value")
    p.add_argument(
        "--skull-strip",
        default=None,
        choices=["auto", "deepbet", "hd-bet", "template", "none"],
        help="override the model's preprocessing setting",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--force", action="store_true", help="redo scans whose outputs are complete")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_detect)


def _run_detect(args: argparse.Namespace) -> int:
    import math

    try:
        threshold = None if args.threshold == "auto" else float(args.threshold)
    except ValueError:
        return _usage_error(f"--threshold must be 'auto' or a number, got {args.threshold!r}")
    if threshold is not None and not math.isfinite(threshold):
        return _usage_error(f"--threshold must be a finite number, got {args.threshold!r}")
    _check_exist(args.inputs)
    _check_model_folder(args.model)
    from brainuad.detect import detect_batch

    device = _device(args.device)
    result = detect_batch(
        args.inputs, args.model, args.out, threshold, args.skull_strip, device, args.force, progress=not args.quiet
    )
    return _report_batch("detect", result, args.out)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="slice- and voxel-level metrics on labelled cases",
        description="Evaluate a model on labelled cases (BraTS-style, MS-style or a slice-label CSV): slice AUROC and "
        "average precision, sensitivity, Dice at a threshold tuned on --tune-cases (never on the reported cases) or "
        "the calibrated one, best-achievable Dice as an upper bound, bootstrap intervals; summary.json, "
        "per_case.csv, table.md, roc.png, pr.png.",
    )
    p.add_argument("--model", required=True, metavar="RUN_DIR", help=MODEL_HELP)
    p.add_argument(
        "--cases", action="append", required=True, metavar="DIR", help="labelled cases to report (repeatable)"
    )
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--tune-cases",
        action="append",
        default=None,
        metavar="DIR",
        help="labelled cases used only to pick the threshold and the default slice score",
    )
    p.add_argument(
        "--healthy",
        action="append",
        default=None,
        metavar="DIR",
        help="held-out healthy scans (raw NIfTI or preprocessed case folders; repeatable): scan-level AUROC/AP of "
        "patients against them and false-positive volume per healthy scan",
    )
    p.add_argument("--modality", default="t2", help="image modality in the case files (default: t2)")
    p.add_argument("--cache", default=None, metavar="DIR", help="keep preprocessed cases here to reuse them")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    _check_model_folder(args.model)
    _check_exist(args.cases + (args.tune_cases or []))
    from brainuad.evaluation import evaluate

    summary = evaluate(
        args.model,
        args.cases,
        args.out,
        tune_sources=args.tune_cases,
        modality=args.modality,
        cache_dir=args.cache,
        device=_device(args.device),
        progress=not args.quiet,
        seed=args.seed,
        healthy_sources=args.healthy,
    )
    slices = summary["slices"]
    line = (
        f"evaluate: {summary['cases']} cases, slice AUROC {slices['auroc']:.3f}, AP {slices['ap_abnormal_class']:.3f}"
        f" ({slices['score']})"
    )
    if "scans" in summary:
        line += f", scan AUROC {summary['scans']['auroc']:.3f} vs {summary['scans']['healthy']} healthy"
    if "voxels" in summary:
        line += f", Dice {summary['voxels']['dice_mean']:.3f}"
    print(f"{line} -> {args.out}")
    if summary.get("warning"):
        print(f"evaluate: {summary['warning']}", file=sys.stderr)
    return EXIT_OK


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="the paper's latent ablation: dense 128-1024 and spatial 1-64 channels, Figures 4 and 5",
        description="Train, calibrate and evaluate every latent variant with the same settings; writes table.md, "
        "Figure 4 (ROC/PR curves of all variants) and Figure 5 (reconstructions). Finished variants are reused.",
    )
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="preprocessed healthy cases")
    p.add_argument("--cases", action="append", required=True, metavar="DIR", help="labelled cases to report")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--tune-cases", action="append", default=None, metavar="DIR", help="labelled tuning cases")
    p.add_argument("--latents", type=int, nargs="+", default=[128, 256, 512, 1024], metavar="Z")
    p.add_argument("--spatial-variants", type=int, nargs="+", default=[1, 4, 16, 64], metavar="C")
    p.add_argument("--modality", default="t2")
    _add_model_and_training_options(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> int:
    from brainuad.ablation import ablate
    from brainuad.errors import ConfigError

    try:
        base = _config_from_args(args)
    except ConfigError as exc:
        return _usage_error(str(exc))
    summaries = ablate(
        args.data, args.cases, args.out, base, args.tune_cases, args.latents, args.spatial_variants,
        args.modality, args.device, progress=not args.quiet,
    )  # fmt: skip
    for name, summary in summaries.items():
        print(f"ablate: {name:14s} slice AUROC {summary['slices']['auroc']:.3f}")
    print(f"ablate: table and Figures 4-5 -> {args.out}")
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole chain on synthetic data (or a real folder) and write a report",
        description="Build a SYNTHETIC healthy cohort and patients with planted lesions (T2 simulated from the "
        "BrainWeb anatomies if found, else from the MNI tissue maps; no download), train a small model on the CPU "
        "within --minutes, calibrate, evaluate against the intensity "
        "baseline, detect, and write report.html. --data DIR runs the same chain on a real folder: DIR/healthy/ "
        "plus labelled case folders.",
    )
    p.add_argument("--out", default="brainuad-demo", help="output folder (default: brainuad-demo)")
    p.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="cap on the whole run, preprocessing included; training takes what is left, at least one epoch "
        "(default: 5)",
    )
    p.add_argument("--data", default=None, metavar="DIR", help="real data: DIR/healthy/ + labelled case folders")
    p.add_argument(
        "--size",
        default="auto",
        choices=["auto", "tiny", "small", "standard"],
        help="cohort and model size (default: auto = the largest that fits --minutes on this machine)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.minutes <= 0:
        return _usage_error("--minutes must be positive")
    if args.data is not None:
        _check_exist([args.data], "data folder")
    from brainuad.demo import REAL_DATA_COMMANDS, run_demo

    device = _device(args.device)
    result = run_demo(args.out, args.minutes, args.data, args.size, args.seed, device, progress=not args.quiet)
    if args.data is None:
        generator = result.data.removeprefix("synthetic: ")
        print(f"demo: the data were SYNTHETIC ({generator}; planted lesions); numbers show the chain working.")
    for name, summary in result.summaries.items():
        voxels = summary.get("voxels", {})
        dice = voxels.get("dice_mean", float("nan"))
        print(f"demo: {name:9s} slice AUROC {summary['slices']['auroc']:.3f}  Dice {dice:.3f}")
    print(f"demo: report -> {result.report}")
    print("To run the same chain on real data:\n" + REAL_DATA_COMMANDS)
    return EXIT_OK


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the models shipped with brainuad (use them as --model builtin:NAME)",
        description="The trained models installed with the package (no download): name, folder and model card. "
        "With NAME, print that model's whole card.",
    )
    p.add_argument("name", nargs="?", default=None, help="print this model's card")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from brainuad.shipped import PREFIX, builtin_names, model_card, resolve_model_dir

    names = builtin_names()
    if args.name is not None:
        name = args.name.removeprefix(PREFIX)
        resolve_model_dir(PREFIX + name)  # unknown name: a clear error listing the shipped ones
        print(model_card(name))
        return EXIT_OK
    if not names:
        print("models: no built-in models in this installation")
    for name in names:
        card = model_card(name).splitlines()
        summary = next((line.strip() for line in card if line.strip() and not line.startswith("#")), "")
        print(f"{PREFIX}{name}\n  {summary}\n  folder: {resolve_model_dir(PREFIX + name)}")
    if names:
        print("Full card: brainuad models NAME. Use: brainuad detect SCAN --model builtin:NAME --out findings/")
    return EXIT_OK


def _usage_error(message: str) -> int:
    print(f"brainuad: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="brainuad",
        description="Unsupervised anomaly detection in brain MRI (after Luo et al.). A research tool, not a "
        "medical device.",
    )
    parser.add_argument("--version", action="version", version=f"brainuad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_preprocess(sub)
    _add_download(sub)
    _add_train(sub)
    _add_calibrate(sub)
    _add_detect(sub)
    _add_evaluate(sub)
    _add_ablate(sub)
    _add_demo(sub)
    _add_models(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainuad`` console script; returns the exit code."""
    from brainuad.errors import BrainuadError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt  # unwinds like Ctrl-C: staging folders are removed, workers stopped

    previous = signal.signal(signal.SIGTERM, terminate) if _in_main_thread() else None
    try:
        return args.func(args)
    except BrainuadError as exc:
        print(f"brainuad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"brainuad {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
