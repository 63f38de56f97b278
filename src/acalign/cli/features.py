"""``acalign features``: extract log-mel features of a data directory, or merge shard stores."""

from __future__ import annotations

import argparse
from typing import Any

from acalign.errors import AcalignError

_DEFAULTS = {  # FeatureConfig's defaults, repeated here so --help needs no torch import
    "sample_rate": 32000,
    "window_seconds": 0.04,
    "hop_seconds": 0.02,
    "n_mels": 64,
    "fmin": 12.0,
    "fmax": 8000.0,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``features`` subcommand."""
    parser = subparsers.add_parser(
        "features",
        help="extract log-mel features into DIR/features/{split}.h5",
        description=(
            "Compute log-mel features for every split manifest DIR/{train,val,test}.json\n"
            "(audio in DIR/audio/{split}/) into DIR/features/{split}.h5, in parallel.\n"
            "An interrupted run resumes where it stopped when started again; an existing\n"
            "store is extended with clips it lacks. With --shard I/N only the I-th of N\n"
            "partitions is done (into {split}.shard-I-of-N.h5); combine the shards with\n"
            "`acalign features --merge OUT SHARD...` (or `acalign features merge OUT SHARD...`)."
        ),
        epilog=(
            "examples:\n"
            "  acalign features data/corpus\n"
            "  acalign features data/corpus --splits train --shard 0/4 --workers 8\n"
            "  acalign features --merge data/corpus/features/train.h5 "
            "data/corpus/features/train.shard-*-of-4.h5"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="DATA_DIR; with --merge (or a leading word 'merge'): OUT SHARD [SHARD ...]",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="merge complete shard stores: PATH... is OUT SHARD [SHARD ...] (default: extract)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        help="splits to process (default: every one of train, val, test that has a manifest)",
    )
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="YAML file with FeatureConfig keys (top level or under 'features'); the options "
        "below override it (default: the paper's settings)",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        help=f"resample audio to this rate in Hz (default: {_DEFAULTS['sample_rate']})",
    )
    parser.add_argument(
        "--window",
        type=float,
        dest="window_seconds",
        help=f"STFT window in seconds (default: {_DEFAULTS['window_seconds']})",
    )
    parser.add_argument(
        "--hop",
        type=float,
        dest="hop_seconds",
        help=f"STFT hop in seconds (default: {_DEFAULTS['hop_seconds']})",
    )
    parser.add_argument(
        "--n-mels", type=int, help=f"number of mel bands (default: {_DEFAULTS['n_mels']})"
    )
    parser.add_argument(
        "--fmin", type=float, help=f"lowest mel frequency in Hz (default: {_DEFAULTS['fmin']})"
    )
    parser.add_argument(
        "--fmax", type=float, help=f"highest mel frequency in Hz (default: {_DEFAULTS['fmax']})"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes computing features; 0 = in this process "
        "(default: all usable cores)",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="only process the I-th of N deterministic partitions of each split (default: all)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing stores instead of resuming/extending them (default: resume)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="warn about and skip clips whose audio is unreadable (default: stop with an error)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (default: shown)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the arguments and call :func:`extract_features` or :func:`merge_feature_stores`."""
    paths = list(args.paths)
    merge = args.merge
    if not merge and paths[0] == "merge" and len(paths) > 1:
        merge, paths = True, paths[1:]
    if merge:
        return _run_merge(paths, overwrite=args.overwrite)
    if len(paths) != 1:
        raise AcalignError(
            f"expected one DATA_DIR, got {len(paths)} paths (use --merge OUT SHARD... to merge)"
        )
    from acalign.data.features import extract_features

    config = _feature_config(args)
    outputs = extract_features(
        paths[0],
        config=config,
        splits=args.splits,
        workers=args.workers,
        shard=_parse_shard(args.shard),
        overwrite=args.overwrite,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    for split, path in outputs.items():
        print(f"{split}: {path}")
    return 0


def _run_merge(paths: list[str], *, overwrite: bool) -> int:
    if len(paths) < 2:
        raise AcalignError("--merge needs OUT and at least one SHARD store")
    from acalign.data.features import FeatureStore, merge_feature_stores

    out = merge_feature_stores(paths[1:], paths[0], overwrite=overwrite)
    with FeatureStore(out) as store:
        print(f"{out}: {len(store)} clips merged from {len(paths) - 1} stores")
    return 0


def _feature_config(args: argparse.Namespace) -> Any:
    """FeatureConfig from --config YAML, then the individual options on top."""
    from acalign.config import from_dict, load_yaml
    from acalign.data.features import FeatureConfig

    values: dict[str, Any] = {}
    source = "command line"
    if args.config:
        data = load_yaml(args.config)
        section = data.get("features", data)
        if not isinstance(section, dict):
            raise AcalignError(f"{args.config}: 'features' must be a mapping")
        values.update(section)
        source = str(args.config)
    for key in ("sample_rate", "window_seconds", "hop_seconds", "n_mels", "fmin", "fmax"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    return from_dict(FeatureConfig, values, source=source)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise AcalignError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise AcalignError(f"--shard I/N needs 0 ≤ I < N, got {text!r}")
    return index, count
