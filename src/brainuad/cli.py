"""The ``brainuad`` command: thin verbs over documented functions; heavy imports happen inside each verb."""

from __future__ import annotations

import argparse
import dataclasses
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


def _choices(name: str) -> list[str]:
    """The allowed values of a config setting (``device``, ``skull_strip``), declared once in :mod:`brainuad.config`."""
    from brainuad.cliflags import choices_of
    from brainuad.config import PreprocessConfig, TrainConfig

    return choices_of(TrainConfig if name == "device" else PreprocessConfig, name)


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
    from brainuad.cliflags import add_flags
    from brainuad.config import PreprocessConfig

    add_flags(
        p.add_argument_group("preprocessing (the model's input; detect uses the model's own)"),
        PreprocessConfig,
        "preprocessing",
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--force", action="store_true", help="redo scans that are already finished")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from brainuad.cliflags import given
    from brainuad.config import ConfigError, PreprocessConfig, from_dict

    if args.jobs < 1:
        raise SystemExit(_usage_error("--jobs must be at least 1"))
    try:
        config = from_dict(PreprocessConfig, given(args, "preprocessing"), where="preprocessing")
    except ConfigError as exc:
        return _usage_error(str(exc))
    _check_exist(args.inputs)
    from brainuad.preprocessing import preprocess_batch

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


def _add_model_and_training_options(p: argparse.ArgumentParser, methods: bool = True) -> None:
    """The model and training flags shared by ``train`` and ``ablate``, made from the config dataclasses; with
    ``methods``, each registered model's own settings too (that imports the models, and torch)."""
    from brainuad.cliflags import add_flags
    from brainuad.config import RECIPES, ModelConfig, TrainConfig

    p.add_argument(
        "--recipe",
        default="paper",
        choices=list(RECIPES),
        help="paper = Luo et al.'s network and training (default); quick = the CPU recipe measured on real T1 "
        "individuals (benchmarks/README.md): mean-image skip, brain-only loss, cosine learning rate, a network on "
        "the volume pooled ×2. Flags given explicitly override the recipe",
    )
    add_flags(p.add_argument_group("model"), ModelConfig, "model", skip=("input_shape", "options"))
    add_flags(p.add_argument_group("training"), TrainConfig, "training")
    if methods:
        from brainuad.models.registry import methods as registered

        kind = next(a for a in p._actions if a.dest == "model.kind")
        kind.choices = [m.name for m in registered()]
        kind.help = (
            "the model: "
            + "; ".join(f"{m.name} = {m.summary}" for m in registered())
            + f" (default: {kind.help.rsplit('(default: ', 1)[-1]}"
        )
        group = p.add_argument_group("settings of one model (apply to that --model only)")
        seen: set[str] = set()
        for method in registered():
            names = {f.name for f in dataclasses.fields(method.Options)}
            add_flags(group, method.Options, "options", skip=tuple(seen), label=f"{method.name}: ")
            seen |= names


def _config_from_args(args: argparse.Namespace):
    """The config tree the model and training flags describe: the recipe's, with every flag given on top (raises
    ConfigError on bad values or a model setting given to another model)."""
    from brainuad.cliflags import given
    from brainuad.config import RECIPES, Config, ModelConfig, replace, to_dict
    from brainuad.models.registry import get_method

    base = RECIPES[args.recipe]()
    model_flags = given(args, "model")
    kind = model_flags.pop("kind", ModelConfig.__dataclass_fields__["kind"].default)
    method = get_method(kind)
    # A recipe's network suits the models of its family; other models start from the defaults.
    same_family = method.family and method.family == get_method(base.model.kind).family
    model_base = base.model if same_family else Config().model
    options = _options_given(args, method)
    if options:
        kept = to_dict(model_base.options) if model_base.kind == kind else {}
        model_flags["options"] = {**kept, **options}
    model = replace(model_base, kind=kind, **model_flags)
    return replace(base, model=model, training=replace(base.training, **given(args, "training")))


def _options_given(args: argparse.Namespace, method) -> dict:
    """The model settings given as flags, refused when they belong to another model than ``method``."""
    from brainuad.cliflags import given
    from brainuad.config import ConfigError

    options = given(args, "options")
    known = {f.name for f in dataclasses.fields(method.Options)}
    foreign = sorted(set(options) - known)
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ConfigError(f"{flags}: not a setting of the {method.name!r} model")
    return options


def _add_train(sub: argparse._SubParsersAction, methods: bool = True) -> None:
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
    _add_model_and_training_options(p, methods)
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


def _resume_config(args: argparse.Namespace, config):
    """For ``train --resume``: the run's saved settings, overridden only by the flags given on this command line
    (``train`` then refuses any that differ from the run's, naming them)."""
    from pathlib import Path

    from brainuad.checkpoints import load_config
    from brainuad.cliflags import given
    from brainuad.config import replace, to_dict
    from brainuad.models.registry import get_method

    saved_path = Path(args.out) / "config.json"
    if not saved_path.is_file():
        return config  # train() says there is nothing to resume
    saved = load_config(saved_path)
    model = given(args, "model")
    options = _options_given(args, get_method(model.get("kind", saved.model.kind)))
    if options:
        model["options"] = {**to_dict(saved.model.options), **options}
    return replace(
        saved, model=replace(saved.model, **model), training=replace(saved.training, **given(args, "training"))
    )


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
    p.add_argument("--device", default="auto", choices=_choices("device"), help="default: auto = CUDA when available")
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
        choices=_choices("skull_strip"),
        help="override the model's preprocessing setting",
    )
    p.add_argument("--device", default="auto", choices=_choices("device"), help="default: auto = CUDA when available")
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
    p.add_argument("--device", default="auto", choices=_choices("device"), help="default: auto = CUDA when available")
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


def _add_ablate(sub: argparse._SubParsersAction, methods: bool = True) -> None:
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
    _add_model_and_training_options(p, methods)
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
        args.modality, base.training.device, progress=not args.quiet,
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
    p.add_argument("--device", default="auto", choices=_choices("device"), help="default: auto = CUDA when available")
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
    p.add_argument("--methods", action="store_true", help="list the methods 'brainuad train --model' can train")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from brainuad.shipped import PREFIX, builtin_names, model_card, resolve_model_dir

    if args.methods:
        from brainuad.models.registry import methods

        for method in methods():
            print(f"{method.name:12s} {method.summary}")
        return EXIT_OK
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


def build_parser(methods: bool = True) -> argparse.ArgumentParser:
    """The argument parser with every verb (exposed for documentation and tests); ``methods=False`` leaves out the
    models' own settings (their flags need the models, hence torch, imported)."""
    parser = argparse.ArgumentParser(
        prog="brainuad",
        description="Unsupervised anomaly detection in brain MRI (after Luo et al.). A research tool, not a "
        "medical device.",
    )
    parser.add_argument("--version", action="version", version=f"brainuad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_preprocess(sub)
    _add_download(sub)
    _add_train(sub, methods)
    _add_calibrate(sub)
    _add_detect(sub)
    _add_evaluate(sub)
    _add_ablate(sub, methods)
    _add_demo(sub)
    _add_models(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainuad`` console script; returns the exit code."""
    from brainuad.errors import BrainuadError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(methods=command in ("train", "ablate"))
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
