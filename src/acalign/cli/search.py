"""``acalign index`` and ``acalign search``: index an audio library, then search it by text."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

INDEX_DESCRIPTION = """\
Index every audio file (WAV, FLAC, Ogg, MP3) under AUDIO_DIR, recursively, with an exported
model, into the directory INDEX. Re-running updates the index: new or changed files (size or
modification time) are embedded, removed ones dropped, the rest reused; files whose stored data
is missing or truncated are embedded again (repaired). An unreadable file is skipped with a
warning. An interrupted run leaves the previous index usable.
"""

SEARCH_DESCRIPTION = """\
Search an index built by `acalign index` with a caption (or with --audio, a recording like
the ones wanted). Prints ranked files with their score and best-matching time span.
"""


class _IntermixedParser(argparse.ArgumentParser):
    """A parser that takes options before, between or after its positionals.

    Plain argparse matches every positional at the first run of non-option words, so in
    ``search INDEX -k 2 CAPTION`` the optional CAPTION is used up (empty) by ``INDEX`` alone and
    ``CAPTION`` is left over; intermixed parsing reads the options first, then the positionals.
    """

    _intermixing = False

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse like :meth:`parse_known_intermixed_args` (also when run as a subcommand)."""
        if self._intermixing:  # before Python 3.13 the intermixed parse calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_intermixed_parser(
    subparsers: argparse._SubParsersAction, name: str, **kwargs: object
) -> argparse.ArgumentParser:
    """``subparsers.add_parser`` with :class:`_IntermixedParser` for this one parser."""
    # add_parser builds its parser with the class the subparsers action was created with
    saved = subparsers._parser_class
    subparsers._parser_class = _IntermixedParser
    try:
        return subparsers.add_parser(name, **kwargs)
    finally:
        subparsers._parser_class = saved


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``index`` and ``search`` subcommands."""
    index = subparsers.add_parser(
        "index",
        help="build or update a searchable index of an audio folder",
        description=INDEX_DESCRIPTION,
        epilog="example:\n  acalign index runs/demo/default/model ~/recordings --out recordings.index",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    index.add_argument("model", type=Path, metavar="MODEL", help="exported model directory")
    index.add_argument("audio_dir", type=Path, metavar="AUDIO_DIR", help="folder of audio files")
    index.add_argument("--out", type=Path, required=True, metavar="INDEX", help="index directory")
    index.add_argument(
        "--pool-seconds", type=float, default=None, metavar="S",
        help="time resolution of the stored frame embeddings, for a new index (default: 0.2)",
    )
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=run_index)

    search = _add_intermixed_parser(
        subparsers,
        "search",
        help="search an index by caption or by example",
        description=SEARCH_DESCRIPTION,
        epilog=(
            "examples:\n"
            '  acalign search recordings.index "a dog barks" -k 10\n'
            "  acalign search recordings.index --audio bark.wav --format json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("index", type=Path, metavar="INDEX", help="index directory")
    search.add_argument("query", nargs="?", default=None, metavar="CAPTION", help="text query")
    search.add_argument("--audio", type=Path, default=None, metavar="FILE", help="query by example")
    search.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    search.add_argument(
        "--model", type=Path, default=None, metavar="MODEL",
        help="model directory (default: the one recorded in the index; must be the same model)",
    )
    search.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    search.set_defaults(func=run_search)


def run_index(args: argparse.Namespace) -> int:
    """Build or update the index and print what changed."""
    from acalign.errors import AcalignError
    from acalign.infer.index import IndexSettings, build_index
    from acalign.infer.model import load_model
    from acalign.runtime import tune_malloc

    if args.pool_seconds is not None and args.pool_seconds <= 0:
        raise AcalignError(f"--pool-seconds must be positive, got {args.pool_seconds}")
    tune_malloc()
    model = load_model(args.model)
    settings = None
    if args.pool_seconds is not None:
        settings = IndexSettings(pool_frames=max(1, round(args.pool_seconds * model.frame_rate)))
    report = build_index(model, args.audio_dir, args.out, settings=settings, progress=not args.quiet)
    repaired = f", repaired {len(report.repaired)}" if report.repaired else ""
    print(
        f"{args.out}: {report.n_files} files, {report.n_chunks} chunks ({report.index_type}); "
        f"added {len(report.added)}, updated {len(report.updated)}{repaired}, removed "
        f"{len(report.removed)}, unchanged {report.unchanged}, skipped {len(report.skipped)} "
        f"in {report.seconds:.1f} s"
    )
    return 0


def run_search(args: argparse.Namespace) -> int:
    """Search by text or by example and print the ranked files."""
    import json

    from acalign.errors import AcalignError
    from acalign.infer.index import hits_table, hits_to_dicts, load_index

    if (args.query is None) == (args.audio is None):
        raise AcalignError("give either a CAPTION or --audio FILE (exactly one)")
    if args.k < 1:
        raise AcalignError(f"-k must be at least 1, got {args.k}")
    model = None
    if args.model is not None:
        from acalign.infer.model import load_model

        model = load_model(args.model)
    index = load_index(args.index, model)
    if args.audio is not None:
        hits = index.search_audio(args.audio, k=args.k)
        query = str(args.audio)
    else:
        hits = index.search(args.query, k=args.k)
        query = args.query
    if args.format == "json":
        print(json.dumps({"query": query, "results": hits_to_dicts(hits)}, indent=2))
    else:
        print(hits_table(hits, query=query), end="")
    return 0
