"""``acalign demo``: the whole pipeline on the embedded corpus (what ``make demo`` runs)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    from acalign.demo import add_arguments

    parser = subparsers.add_parser(
        "demo",
        help="build the corpus, train, evaluate and report (make demo)",
        description="Build the embedded corpus from real recordings, extract features, train the "
        "default, paper and supervised configurations, evaluate them on the test split and write "
        "a report. Re-running reuses what is already built.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from acalign.demo import run_demo

    run_demo(args.out, size=args.size, seed=args.seed, cache=args.cache, runs=args.runs, max_minutes=args.max_minutes)
    return 0
