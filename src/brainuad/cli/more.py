"""``demo`` (the whole chain on a laptop) and ``models`` (the shipped models and the registered methods)."""

from __future__ import annotations

import argparse

from brainuad.cli.common import (
    EXIT_OK,
    add_device_flag,
    check_exist,
    device_from_flag,
    usage_error,
)


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
        help="cap on the whole run, preprocessing included; training takes what is left, at least one step "
        "(default: 5)",
    )
    p.add_argument("--data", default=None, metavar="DIR", help="real data: DIR/healthy/ + labelled case folders")
    p.add_argument(
        "--size",
        default="auto",
        choices=["auto", "tiny", "small", "standard"],
        help="cohort and model size (default: auto = the largest that fits --minutes on this machine)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated cohort and the training (default: 0)")
    add_device_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.minutes <= 0:
        return usage_error("--minutes must be positive")
    if args.data is not None:
        check_exist([args.data], "data folder")
    from brainuad.demo import REAL_DATA_COMMANDS, run_demo
    from brainuad.train.guard import banner_text, passed_text

    device = device_from_flag(args.device)
    result = run_demo(args.out, args.minutes, args.data, args.size, args.seed, device, progress=not args.quiet)
    if args.data is None:
        generator = result.data.removeprefix("synthetic: ")
        print(f"demo: the data were SYNTHETIC ({generator}; planted lesions); numbers show the chain working.")
    for name, summary in result.summaries.items():
        voxels = summary.get("voxels", {})
        dice = voxels.get("dice_mean", float("nan"))
        print(f"demo: {name:9s} slice AUROC {summary['slices']['auroc']:.3f}  Dice {dice:.3f}")
    for name, summary in result.summaries.items():
        warning = banner_text(summary.get("reconstruction_check"))
        if warning:
            print(f"demo: {name}: {warning} (A larger --minutes buys a larger cohort and longer training.)")
        elif passed_text(summary.get("reconstruction_check")):
            print(f"demo: {name}: {passed_text(summary.get('reconstruction_check'))}")
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
    p.add_argument("--methods", action="store_true", help="list the methods 'brainuad train --method' can train")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from brainuad.io.shipped import PREFIX, builtin_names, model_card, resolve_model_dir

    if args.methods:
        from brainuad.models.base import methods

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
