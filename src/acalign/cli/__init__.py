"""The ``acalign`` command: thin subcommands that parse arguments and call the library.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser and
sets ``func`` to a function taking the parsed namespace and returning an exit code. Heavy
imports (torch, h5py) happen inside those functions so ``acalign --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from acalign import __version__
from acalign.errors import AcalignError

# Order shown in --help.
SUBCOMMAND_MODULES = (
    "corpus",
    "features",
    "train",
    "evaluate",
    "ground",
    "search",
    "serve",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="acalign",
        description=(
            "Unsupervised audio-caption aligning: build a corpus, extract features, train, "
            "evaluate, ground phrases in recordings and search audio by text."
        ),
    )
    parser.add_argument("--version", action="version", version=f"acalign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"acalign.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code. User errors print one line, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AcalignError as exc:
        print(f"acalign {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"acalign {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
