"""Verbs that train: ``train`` and ``ablate``, their flags made from the config dataclasses and the registered
models (:mod:`brainuad.cli.flags`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from brainuad.cli.common import (
    EXIT_OK,
    usage_error,
)

log = logging.getLogger(__name__)


def _add_model_and_training_options(p: argparse.ArgumentParser, methods: bool = True) -> None:
    """The model and training flags shared by ``train`` and ``ablate``, made from the config dataclasses; with
    ``methods``, each registered model's own settings too (that imports the models, and torch)."""
    from brainuad.cli.flags import add_flags
    from brainuad.config import RECIPES, ModelConfig, PostprocessConfig, TrainConfig

    p.add_argument(
        "--recipe",
        default="paper",
        choices=list(RECIPES),
        help="paper = Luo et al.'s network and training (default); quick = the CPU recipe measured on real T1 "
        "individuals (benchmarks/README.md): mean-image skip, brain-only loss, cosine learning rate, a network on "
        "the volume pooled ×2. Flags given explicitly override the recipe",
    )
    model = p.add_argument_group("model")
    add_flags(model, ModelConfig, "model", skip=("input_shape", "options"))
    # --model names a trained model everywhere else (calibrate, detect, evaluate, bids): here it is refused, naming
    # the flag that chooses what to train, rather than silently meaning something else.
    model.add_argument("--model", action=_RefuseModelFlag, help=argparse.SUPPRESS)
    add_flags(p.add_argument_group("training"), TrainConfig, "training")
    post = p.add_argument_group("post-processing (stored with the run; calibrate, detect and evaluate apply it)")
    add_flags(post, PostprocessConfig, "postprocessing")
    if methods:
        from brainuad.models.base import DEFAULT_KIND
        from brainuad.models.base import methods as registered

        kind = next(a for a in p._actions if a.dest == "model.kind")
        kind.choices = [m.name for m in registered()]
        summaries = "; ".join(f"{m.name} = {m.summary}" for m in registered())
        kind.help = f"the method to train: {summaries} (default: {DEFAULT_KIND})"
        group = p.add_argument_group("settings of one method (apply to that --method only)")
        seen: set[str] = set()
        taken = set(p._option_string_actions)
        for method in registered():
            names = {f.name for f in dataclasses.fields(method.Options)}
            clash = sorted(n for n in names - seen if "--" + n.replace("_", "-") in taken)
            for name in clash:  # a plug-in's setting named like a core flag: no flag, rather than no train verb
                log.warning("model %r: setting %r has no flag (the name is taken)", method.name, name)
            add_flags(group, method.Options, "options", skip=(*seen, *clash), label=f"{method.name}: ")
            seen |= names


class _RefuseModelFlag(argparse.Action):
    """``train/ablate --model KIND``: a usage error (exit 2) that names ``--method``, the flag that chooses the kind."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.pop("nargs", None)
        super().__init__(option_strings, "refused_model_flag", nargs="?", default=None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        kind = f" {values}" if values else " KIND"
        parser.error(
            f"--model names a trained model folder (calibrate, detect, evaluate); to choose what to train, use "
            f"--method{kind} (brainuad models --methods lists them)"
        )


def _config_from_args(args: argparse.Namespace):
    """The config tree the model and training flags describe: the recipe's, with every flag given on top (raises
    ConfigError on bad values or a model setting given to another model)."""
    from brainuad.cli.flags import given
    from brainuad.config import RECIPES, Config
    from brainuad.models.base import DEFAULT_KIND, get_method

    base = RECIPES[args.recipe]()
    kind = given(args, "model").get("kind", DEFAULT_KIND)
    family = get_method(kind).family
    # A recipe's network suits the models of its family; other models start from the defaults.
    same_family = family and family == get_method(base.model.kind).family
    return _with_flags(args, base, base.model if same_family else Config().model, kind)


def _with_flags(args: argparse.Namespace, base, model_base, kind: str):
    """``base`` with the model section ``model_base`` of model ``kind`` and every flag given on top; the model's own
    settings given are checked against ``kind`` and merged into ``model_base``'s when it is the same model."""
    from brainuad.cli.flags import given
    from brainuad.config import replace, to_dict
    from brainuad.models.base import get_method

    model = {k: v for k, v in given(args, "model").items() if k != "kind"}
    options = _options_given(args, get_method(kind))
    if options:
        model["options"] = {**(to_dict(model_base.options) if model_base.kind == kind else {}), **options}
    return replace(
        base,
        model=replace(model_base, kind=kind, **model),
        training=replace(base.training, **given(args, "training")),
        postprocessing=replace(base.postprocessing, **given(args, "postprocessing")),
    )


def _options_given(args: argparse.Namespace, method) -> dict:
    """The model settings given as flags, refused when they belong to another model than ``method``."""
    from brainuad.cli.flags import given
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
        help="folder of preprocessed healthy cases (repeatable), or one BIDS dataset of healthy participants",
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    _add_bids_options(p)
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
    from brainuad.train.loop import train

    try:
        # A resumed run starts from its saved settings (its model's own flags are checked against its model).
        config = _resume_config(args) if args.resume else None
        config = config or _config_from_args(args)
    except ConfigError as exc:
        return usage_error(str(exc))
    data = _bids_cases(args) if _is_bids(args.data) else args.data
    result = train(data, args.out, config, resume=args.resume, progress=not args.quiet, val_data=args.val_data)
    if int(os.environ.get("RANK", "0")) == 0:
        from brainuad.train.guard import banner, read_check

        curve_path = result.run_dir / "learning_curve.json"
        if result.epochs_done and curve_path.is_file():  # a method validated on a held-out synthetic task
            from brainuad.io.volumes import read_json

            curve = read_json(curve_path)
            print(
                f"train: {result.epochs_done} steps, best held-out-task ({curve.get('holdout_task')}) AP "
                f"{curve.get('best_heldout_ap', float('nan')):.3f} at step {result.best_epoch} -> {result.run_dir}"
            )
        elif result.epochs_done:
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


def _add_bids_options(p: argparse.ArgumentParser) -> None:
    """How ``--data BIDS_DIR`` is read: which scans, and how they are preprocessed (into RUN_DIR-cases/)."""
    from brainuad.cli.flags import add_flags
    from brainuad.config import PreprocessConfig

    group = p.add_argument_group(
        "a BIDS dataset as --data (its chosen scans are preprocessed into RUN_DIR-cases/, reused on a re-run)"
    )
    group.add_argument("--suffix", default="T2w", choices=["T1w", "T2w", "FLAIR"], help="which scans (default: T2w)")
    group.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL", help="default: all")
    group.add_argument(
        "--participants-filter",
        action="append",
        default=None,
        metavar="COLUMN=VALUE[,VALUE]",
        help="keep participants whose participants.tsv row matches (repeatable, all must hold), e.g. group=control",
    )
    add_flags(group, PreprocessConfig, "preprocessing")


def _is_bids(data: list[str]) -> bool:
    from brainuad.bids.training import is_bids_dataset

    bids = [d for d in data if is_bids_dataset(d)]
    if bids and len(data) > 1:
        raise SystemExit(usage_error("--data BIDS_DIR: give one BIDS dataset, not with other folders"))
    return bool(bids)


def _bids_cases(args: argparse.Namespace) -> list:
    """``--data BIDS_DIR``: the chosen scans preprocessed with the preprocessing flags given."""
    from pathlib import Path

    from brainuad.bids.training import prepare_training_cases
    from brainuad.cli.flags import given
    from brainuad.config import PreprocessConfig, from_dict

    return prepare_training_cases(
        args.data[0],
        Path(f"{Path(args.out).resolve()}-cases"),
        from_dict(PreprocessConfig, given(args, "preprocessing"), where="preprocessing"),
        suffix=args.suffix,
        participant_labels=args.participant_label,
        conditions=args.participants_filter,
        progress=not args.quiet,
    )


def _resume_config(args: argparse.Namespace):
    """For ``train --resume``: the run's saved settings, overridden only by the flags given on this command line
    (``train`` then refuses any that differ from the run's, naming them); ``None`` when the folder holds no run."""
    from pathlib import Path

    from brainuad.cli.flags import given
    from brainuad.train.checkpoints import load_config

    saved_path = Path(args.out) / "config.json"
    if not saved_path.is_file():
        return None  # train() says there is nothing to resume
    saved = load_config(saved_path)
    return _with_flags(args, saved, saved.model, given(args, "model").get("kind", saved.model.kind))


def _add_ablate(sub: argparse._SubParsersAction, methods: bool = True) -> None:
    p = sub.add_parser(
        "ablate",
        help="the paper's latent ablation: dense 128-1024 and spatial 1-64 channels, Figures 4 and 5",
        description="Train, calibrate and evaluate every latent variant with the same settings; writes table.md, "
        "Figure 4 (ROC/PR curves of all variants) and Figure 5 (reconstructions). Finished variants are reused.",
    )
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="preprocessed healthy cases")
    p.add_argument("--cases", action="append", required=True, metavar="DIR", help="labelled cases to report")
    p.add_argument("--out", required=True, metavar="DIR", help="ablation folder: runs, tables, figures")
    p.add_argument("--tune-cases", action="append", default=None, metavar="DIR", help="labelled tuning cases")
    p.add_argument(
        "--latents", type=int, nargs="+", default=[128, 256, 512, 1024], metavar="Z",
        help="dense latent sizes of the ae variants (the paper's Figure 4; default: 128 256 512 1024)",
    )  # fmt: skip
    p.add_argument(
        "--spatial-variants", type=int, nargs="+", default=[1, 4, 16, 64], metavar="C",
        help="spatial latent channels of the spatial-ae variants (Figure 5; default: 1 4 16 64)",
    )  # fmt: skip
    p.add_argument("--modality", default="t2", help="image modality in the case files (default: t2)")
    _add_model_and_training_options(p, methods)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> int:
    from brainuad.errors import ConfigError
    from brainuad.evaluate.ablation import ablate

    try:
        base = _config_from_args(args)
    except ConfigError as exc:
        return usage_error(str(exc))
    summaries = ablate(
        args.data, args.cases, args.out, base, args.tune_cases, args.latents, args.spatial_variants,
        args.modality, base.training.device, progress=not args.quiet,
    )  # fmt: skip
    for name, summary in summaries.items():
        print(f"ablate: {name:14s} slice AUROC {summary['slices']['auroc']:.3f}")
    print(f"ablate: table and Figures 4-5 -> {args.out}")
    return EXIT_OK
