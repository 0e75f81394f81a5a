"""Verbs that prepare data: ``preprocess`` and ``download``."""

from __future__ import annotations

import argparse

from brainuad.cli.common import (
    EXIT_OK,
    add_orientation_flag,
    add_shard_flag,
    check_exist,
    report_batch,
    shard_from_flag,
    usage_error,
)


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
    from brainuad.cli.flags import add_flags
    from brainuad.config import PreprocessConfig

    add_flags(
        p.add_argument_group("preprocessing (the model's input; detect uses the model's own)"),
        PreprocessConfig,
        "preprocessing",
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--force", action="store_true", help="redo scans that are already finished")
    add_shard_flag(p)
    add_orientation_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from brainuad.cli.flags import given
    from brainuad.config import ConfigError, PreprocessConfig, from_dict

    if args.jobs < 1:
        raise SystemExit(usage_error("--jobs must be at least 1"))
    try:
        config = from_dict(PreprocessConfig, given(args, "preprocessing"), where="preprocessing")
    except ConfigError as exc:
        return usage_error(str(exc))
    check_exist(args.inputs)
    from brainuad.preprocess.pipeline import preprocess_batch

    shard = shard_from_flag(args.shard)
    result = preprocess_batch(
        args.inputs,
        args.out,
        config,
        jobs=args.jobs,
        force=args.force,
        progress=not args.quiet,
        orientation=args.assume_orientation,
        shard=shard,
    )
    return report_batch("preprocess", result, args.out)


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
    from brainuad.data.download import IXI_BASE_URL, download_ixi

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
