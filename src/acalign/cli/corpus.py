"""``acalign corpus``: build the embedded corpus, list its sources, catalogue its recordings."""

from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from pathlib import Path

from acalign.errors import AcalignError

DESCRIPTION = """\
Synthesise an AudioGrounding-style corpus with exact timestamps from real recordings that
Debian packages ship (0 A.D., Wesnoth, Minetest, SuperTuxKart, bucklespring, Asterisk prompts)
plus espeak-ng speech, or from your own labelled sounds (--library/--labels).
Packages are fetched with apt-get download into a cache (no root needed).
"""

BUILD_EPILOG = """\
output: DIR/{train,val,test}.json (AudioGrounding v2), DIR/audio/{split}/*.wav (10 s, mono,
PCM16), DIR/events/{split}.json, DIR/catalogue.csv, DIR/SOURCES.md, DIR/licences/,
DIR/stats.json, DIR/corpus.yaml. Re-running with the same arguments reuses finished clips.
labels.csv for --library: columns file,label and optionally family,licence,role
(role: event, background or both).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``corpus`` command and its ``build``, ``sources`` and ``catalogue`` actions."""
    from acalign.data.corpus.build import SIZES
    from acalign.data.corpus.sources import DEFAULT_PACKAGES

    parser = subparsers.add_parser(
        "corpus", help="build the embedded corpus from real recordings", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=run)

    build = actions.add_parser(
        "build", help="synthesise the corpus", description=DESCRIPTION, epilog=BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--out", required=True, type=Path, help="output directory (required)")
    sizes = ", ".join(f"{k}={'/'.join(map(str, v))}" for k, v in SIZES.items())
    build.add_argument("--size", default="default", choices=sorted(SIZES),
                       help=f"clips per split train/val/test: {sizes} (default: default)")
    build.add_argument("--clips", metavar="TRAIN,VAL,TEST",
                       help="explicit clip counts, overriding --size (default: none)")
    build.add_argument("--seed", type=int, default=0, help="random seed; same seed, same corpus (default: 0)")
    build.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                       help="comma-separated Debian packages to draw from (default: %(default)s)")
    build.add_argument("--no-speech", action="store_true", help="leave out espeak-ng speech (default: included)")
    build.add_argument("--library", type=Path, help="folder of your own sounds (default: none; use the packages)")
    build.add_argument("--labels", type=Path, help="CSV file,label[,family,licence,role] for --library (default: none)")
    build.add_argument("--taxonomy", type=Path, help="a taxonomy YAML replacing the curated one (default: built in)")
    build.add_argument("--min-recordings", type=int, default=3,
                       help="leave out classes with fewer recordings (default: 3)")
    build.add_argument("--sample-rate", type=int, default=32000, help="clip sample rate in Hz (default: 32000)")
    _add_source_options(build)
    build.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="parallel processes for decoding and mixing (default: all cores, %(default)s)")
    build.add_argument("--force", action="store_true",
                       help="rebuild even if --out holds a corpus with other settings (default: refuse)")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")

    sources = actions.add_parser("sources", help="list the packages and whether they are cached",
                                 description="List the Debian packages the corpus draws on, their "
                                 "licence, and whether their .deb and extracted audio are in the cache.")
    _add_source_options(sources)

    catalogue = actions.add_parser("catalogue", help="fetch, extract and catalogue the recordings",
                                   description="Fetch and extract the packages (cached), then write and "
                                   "summarise the catalogue: file, class, family, package, licence.")
    _add_source_options(catalogue)
    catalogue.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                           help="comma-separated packages (default: %(default)s)")
    catalogue.add_argument("--no-speech", action="store_true", help="leave out espeak-ng speech (default: included)")
    catalogue.add_argument("--output", type=Path,
                           help="also copy the catalogue CSV here (default: only CACHE/catalogue.csv)")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", type=Path, default=None,
                        help="download/extraction cache (default: $ACALIGN_CACHE or ~/.cache/acalign)")
    parser.add_argument("--debs", type=Path, action="append", default=[],
                        help="folder of already downloaded .deb files, used before apt-get download "
                        "(repeatable; default: none)")


def run(args: argparse.Namespace) -> int:
    """Dispatch ``acalign corpus ACTION``; return the exit code."""
    action = getattr(args, "action", None)
    if action == "build":
        return _build(args)
    if action == "sources":
        return _sources(args)
    if action == "catalogue":
        return _catalogue(args)
    raise AcalignError("choose an action: build, sources or catalogue (see acalign corpus --help)")


def _cache(args: argparse.Namespace) -> Path:
    from acalign.data.corpus.sources import default_cache_dir

    return args.cache.expanduser() if args.cache else default_cache_dir()


def _packages(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _build(args: argparse.Namespace) -> int:
    from acalign.data.corpus.build import build_config, build_corpus
    from acalign.data.corpus.report import format_summary

    clips = None
    if args.clips:
        try:
            clips = [int(n) for n in args.clips.split(",")]
        except ValueError:
            raise AcalignError(f"--clips must be three integers TRAIN,VAL,TEST, got {args.clips!r}") from None
    if args.workers < 1:
        raise AcalignError(f"--workers must be at least 1, got {args.workers}")
    library = str(args.library.resolve()) if args.library else None
    labels = str(args.labels.resolve()) if args.labels else None
    config = build_config(
        size=args.size,
        clips=clips,
        seed=args.seed,
        packages=[] if library else _packages(args.packages),
        speech=not args.no_speech and library is None,
        library=library,
        labels=labels,
        taxonomy=str(args.taxonomy.resolve()) if args.taxonomy else None,
        min_recordings=args.min_recordings,
        sample_rate=args.sample_rate,
    )
    result = build_corpus(
        config, args.out, cache=_cache(args), debs_dirs=args.debs, workers=args.workers,
        force=args.force, progress=not args.no_progress,
    )
    print(format_summary(result.stats))
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    print(f"corpus written to {result.out} ({timings})")
    return 0


def _sources(args: argparse.Namespace) -> int:
    from acalign.data.corpus.sources import AptFetcher
    from acalign.data.corpus.taxonomy import load_taxonomy

    cache = _cache(args)
    fetcher = AptFetcher(cache, debs_dirs=args.debs)
    taxonomy = load_taxonomy()
    print(f"cache: {cache}")
    print(f"{'package':<30} {'licence':<14} {'deb':<6} {'extracted'}")
    for name, info in taxonomy.packages.items():
        deb = "yes" if fetcher.local_deb(name) else "no"
        extracted = "yes" if (cache / "audio" / name / ".complete.json").is_file() else "no"
        print(f"{name:<30} {info.licence:<14} {deb:<6} {extracted}")
    speech = [c.name for c in taxonomy.classes.values() if c.speech]
    print(f"{'espeak-ng':<30} {'GPL-3+':<14} speech classes: {', '.join(speech)}")
    return 0


def _catalogue(args: argparse.Namespace) -> int:
    import shutil

    from acalign.data.corpus.build import CorpusConfig, collect_recordings

    cache = _cache(args)
    config = CorpusConfig(packages=_packages(args.packages), speech=not args.no_speech)
    recordings, classes = collect_recordings(config, cache=cache, debs_dirs=args.debs)
    counts: Counter = Counter(r.label for r in recordings)
    families: dict[str, set[str]] = defaultdict(set)
    for rec in recordings:
        families[rec.label].add(rec.family)
    print(f"{'class':<14} {'role':<10} {'recordings':>10} {'families':>9}")
    for label in sorted(counts):
        print(f"{label:<14} {classes[label].role:<10} {counts[label]:>10} {len(families[label]):>9}")
    print(f"{len(recordings)} recordings in {len(counts)} classes; catalogue: {cache / 'catalogue.csv'}")
    if args.output:
        shutil.copyfile(cache / "catalogue.csv", args.output)
    return 0
