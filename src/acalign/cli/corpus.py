"""``acalign corpus``: build the embedded corpus, list its sources, catalogue its recordings."""

from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from pathlib import Path

from acalign.errors import AcalignError

DESCRIPTION = """\
Synthesise an AudioGrounding-style corpus with exact timestamps from real recordings that
Debian packages ship (games' sound effects, sampled instruments from SoundFonts and drum kits,
telephone prompts) plus espeak-ng speech, or from your own labelled sounds (--library/--labels).
Packages are fetched with apt-get download into a cache (no root needed). Whole packages are
held out of training for a test on unseen sources (the test_unseen split).
"""

BUILD_EPILOG = """\
output: DIR/{train,val,test,test_unseen}.json (AudioGrounding v2), DIR/audio/{split}/*.wav
(10 s, mono, PCM16), DIR/events/{split}.json, DIR/catalogue.csv, DIR/SOURCES.md, DIR/licences/,
DIR/stats.json, DIR/duplicates.json, DIR/corpus.yaml. Re-running with the same arguments reuses
finished clips.
labels.csv for --library: columns file,label and optionally family,licence,role
(role: event, background or both).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``corpus`` command and its ``build``, ``sources``, ``catalogue`` and ``audit`` actions."""
    from acalign.data.corpus.build import SIZES

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
    build.add_argument("--clips", metavar="TRAIN,VAL,TEST[,UNSEEN]",
                       help="explicit clip counts, overriding --size (default: none; UNSEEN = TEST)")
    build.add_argument("--seed", type=int, default=0, help="random seed; same seed, same corpus (default: 0)")
    _add_package_options(build)
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

    sources = actions.add_parser("sources", help="list the packages: state, size, licence",
                                 description="List the Debian packages the corpus draws on: licence, "
                                 ".deb size, whether the .deb is downloaded and its audio extracted, how "
                                 "many recordings the taxonomy takes from it, and whether it is held out "
                                 "for test_unseen.")
    _add_source_options(sources)

    catalogue = actions.add_parser("catalogue", help="fetch, extract and catalogue the recordings",
                                   description="Fetch and extract the packages (cached), then write and "
                                   "summarise the catalogue: file, class, family, package, licence.")
    _add_source_options(catalogue)
    _add_package_options(catalogue)
    catalogue.add_argument("--no-speech", action="store_true", help="leave out espeak-ng speech (default: included)")
    catalogue.add_argument("--output", type=Path,
                           help="also copy the catalogue CSV here (default: only CACHE/catalogue.csv)")

    audit = actions.add_parser(
        "audit", help="draw contact sheets of every class's recordings",
        description="Fetch, extract and prepare the recordings (cached), then draw one PNG contact sheet "
        "per class: a log-mel thumbnail of each recording with its package and file name, to check the "
        "labels by eye. Writes OUT/{class}.png and OUT/index.md.",
    )
    audit.add_argument("--out", required=True, type=Path, help="folder for the sheets (required)")
    audit.add_argument("--classes", help="comma-separated classes to draw (default: all)")
    _add_source_options(audit)
    _add_package_options(audit)
    audit.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="parallel processes for decoding (default: all cores, %(default)s)")
    audit.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")


def _add_package_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packages", default=None,
                        help="comma-separated Debian packages to draw from (default: every package of "
                        "the taxonomy; `acalign corpus sources` lists them)")
    parser.add_argument("--unseen-packages", default=None,
                        help="comma-separated packages held out of training for test_unseen, or 'none' "
                        "(default: the taxonomy's held-out set)")


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
    if action == "audit":
        return _audit(args)
    raise AcalignError("choose an action: build, sources, catalogue or audit (see acalign corpus --help)")


def _cache(args: argparse.Namespace) -> Path:
    from acalign.data.corpus.sources import default_cache_dir

    return args.cache.expanduser() if args.cache else default_cache_dir()


def _packages(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [p.strip() for p in text.split(",") if p.strip()]


def _clip_counts(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) not in (3, 4):
        raise AcalignError(f"--clips must be three or four integers TRAIN,VAL,TEST[,UNSEEN], got {text!r}")
    return counts


def _build(args: argparse.Namespace) -> int:
    from acalign.data.corpus.build import build_config, build_corpus
    from acalign.data.corpus.report import format_summary

    clips = _clip_counts(args.clips)
    if args.workers < 1:
        raise AcalignError(f"--workers must be at least 1, got {args.workers}")
    library = str(args.library.resolve()) if args.library else None
    labels = str(args.labels.resolve()) if args.labels else None
    config = build_config(
        size=args.size,
        clips=clips,
        seed=args.seed,
        packages=[] if library else _packages(args.packages),
        unseen_packages=[] if library else _packages(args.unseen_packages),
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
    from acalign.data.corpus.apt import AptFetcher
    from acalign.data.corpus.sources import MARKER
    from acalign.data.corpus.taxonomy import load_taxonomy

    cache = _cache(args)
    fetcher = AptFetcher(cache, debs_dirs=args.debs)
    taxonomy = load_taxonomy()
    counts = _catalogue_counts(cache)
    print(f"cache: {cache}")
    print(f"{'package':<32} {'licence':<22} {'.deb MB':>8} {'state':<10} {'recordings':>10}  role")
    total = 0.0
    for name, info in taxonomy.packages.items():
        deb = fetcher.local_deb(name)
        size = deb.stat().st_size / 1e6 if deb else None
        total += size or 0.0
        if (cache / "audio" / name / MARKER).is_file():
            state = "extracted"
        else:
            state = "downloaded" if deb else "missing"
        role = "held out (test_unseen)" if name in taxonomy.unseen_packages else "train/val/test"
        kind = " soundfont" if info.soundfonts else ""
        size_text = f"{size:8.1f}" if size is not None else f"{'-':>8}"
        print(f"{name:<32} {info.licence[:22]:<22} {size_text} {state:<10} {counts.get(name, '-'):>10}  {role}{kind}")
    speech = [c.name for c in taxonomy.classes.values() if c.speech]
    print(f"{'espeak-ng':<32} {'GPL-3+':<22} {'':>8} {'':<10} {counts.get('espeak-ng', '-'):>10}  speech: {', '.join(speech)}")
    print(f"{len(taxonomy.packages)} packages, {total:.0f} MB of .deb files downloaded; recordings as of the last "
          "catalogue (`acalign corpus catalogue`)")
    return 0


def _catalogue_counts(cache: Path) -> dict[str, int]:
    """Recordings per package in the cache's catalogue (empty when none was written yet)."""
    from acalign.data.corpus.sources import read_catalogue

    if not (cache / "catalogue.csv").is_file():
        return {}
    return dict(Counter(r.package for r in read_catalogue(cache / "catalogue.csv")))


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
    print(f"{'class':<20} {'role':<10} {'recordings':>10} {'families':>9}")
    for label in sorted(counts):
        print(f"{label:<20} {classes[label].role:<10} {counts[label]:>10} {len(families[label]):>9}")
    print(f"{len(recordings)} recordings in {len(counts)} classes; catalogue: {cache / 'catalogue.csv'}")
    if args.output:
        shutil.copyfile(cache / "catalogue.csv", args.output)
    return 0


def _audit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from acalign.data.corpus.audit import write_audit_sheets
    from acalign.data.corpus.build import CorpusConfig, collect_recordings, deduplicate, prepare_all
    from acalign.data.corpus.splits import family_splits, unseen_split
    from acalign.data.corpus.taxonomy import load_taxonomy

    if args.workers < 1:
        raise AcalignError(f"--workers must be at least 1, got {args.workers}")
    cache = _cache(args)
    config = CorpusConfig(packages=_packages(args.packages), unseen_packages=_packages(args.unseen_packages))
    config.validate()
    progress = not args.no_progress
    recordings, classes = collect_recordings(config, cache=cache, debs_dirs=args.debs, progress=progress)
    wanted = _packages(args.classes) if args.classes else None
    unknown = sorted(set(wanted or ()) - set(classes))
    if unknown:
        raise AcalignError(f"--classes: unknown class(es) {', '.join(unknown)}")
    recordings = prepare_all(recordings, cache, config.mix, workers=args.workers, progress=progress)
    held = config.held_out_packages(load_taxonomy(config.taxonomy))
    recordings, _ = deduplicate(recordings, cache, config.mix, held_out=held)
    seen, unseen = unseen_split(recordings, held)
    split_of = family_splits(seen, unseen, seed=config.seed, val_fraction=config.val_fraction,
                             test_fraction=config.test_fraction)
    sheets = write_audit_sheets(
        seen + unseen, split_of, cache, config.mix, args.out, classes=wanted,
        progress=lambda jobs: tqdm(jobs, desc="audit sheets", unit="sheet", disable=not progress),
    )
    print(f"{len(sheets)} sheets for {len({r.label for r in seen + unseen if not wanted or r.label in wanted})} "
          f"classes in {args.out} (index: {args.out / 'index.md'})")
    return 0
