"""``acalign evaluate``: score a trained run on a split and write metrics, report and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Evaluate RUN_DIR/model on DIR/{split}.json (features from DIR/features/{split}.h5):
retrieval text->audio and audio->text (R@1/5/10, mAP@10, and the paper's 30-candidate
protocol), phrase-based sound event detection (frame AUC, PSDS, event F1), each next to a
uniform-random scorer evaluated with the same code.

The event threshold and median filter are chosen on the validation split (--val-split), never
on the split reported, and stored in RUN_DIR/model/inference.json for `acalign ground`.

Writes RUN_DIR/metrics.json, RUN_DIR/report.md and RUN_DIR/plots/. With --compare, also
RUN_DIR/comparison.md: this run side by side with already evaluated runs, e.g.
  acalign evaluate runs/default --data corpus --compare paper=runs/paper supervised=runs/supervised
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run: retrieval and phrase SED metrics, report, plots",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="training run folder holding model/")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="data directory with {split}.json and features/")
    parser.add_argument("--split", default="test", help="split to report (default: test)")
    parser.add_argument(
        "--val-split",
        default="val",
        help="split the event threshold is chosen on (default: val); 'none' keeps the model's inference.json",
    )
    parser.add_argument("--gallery", type=int, default=4, metavar="N", help="clips drawn in plots/gallery_NN.png (default: 4)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random baseline and the paper protocol (default: 0)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="clips/captions per forward pass (default: 32)")
    parser.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="NAME=RUN_DIR",
        help="evaluated runs to put side by side with this one in RUN_DIR/comparison.md",
    )
    parser.add_argument("--name", default=None, help="this run's name in the comparison (default: RUN_DIR's folder name)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, optionally compare, and print where the outputs went."""
    from acalign.evaluate import evaluate_run, write_comparison_report

    name = args.name or args.run_dir.name
    compare = parse_compare(args.compare, run_dir=args.run_dir, name=name)
    val_split = None if args.val_split.lower() == "none" else args.val_split
    results = evaluate_run(
        args.run_dir,
        args.data,
        split=args.split,
        val_split=val_split,
        batch_size=args.batch_size,
        seed=args.seed,
        gallery=args.gallery,
    )
    t2a = results["retrieval"]["text_to_audio"]
    sed = results["sed"]
    print(
        f"text->audio R@1 {t2a['R@1']:.3f}  R@10 {t2a['R@10']:.3f}  mAP@10 {t2a['mAP@10']:.3f}  |  "
        f"PSDS {sed['psds']:.3f}  event F1 {sed['event_f1']:.3f}"
    )
    print(f"wrote {args.run_dir / 'metrics.json'}, {args.run_dir / 'report.md'}, {args.run_dir / 'plots'}/")
    if compare:
        runs = {name: args.run_dir, **compare}
        path = write_comparison_report(runs, args.run_dir / "comparison.md")
        print(f"wrote {path}")
    return 0


def parse_compare(items: list[str], *, run_dir: Path, name: str) -> dict[str, Path]:
    """Turn ``--compare NAME=RUN_DIR ...`` into ``{name: run folder}``, checked before evaluating.

    Every folder must hold a readable ``metrics.json``, except ``run_dir`` itself (evaluating
    writes it). ``name`` is this run's name in the comparison; no other folder may take it.

    Raises
    ------
    AcalignError
        An item is not NAME=RUN_DIR, a name repeats, or a folder is missing or not evaluated.
    """
    from acalign.errors import AcalignError
    from acalign.evaluate import read_metrics

    compare: dict[str, Path] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise AcalignError(f"--compare expects NAME=RUN_DIR, got {item!r}")
        path = Path(value)
        this_run = path.resolve() == run_dir.resolve()
        if key in compare or (key == name and not this_run):
            raise AcalignError(f"--compare {item}: the name {key!r} is already taken (see --name)")
        if not path.is_dir():
            raise AcalignError(f"--compare {item}: run folder {path} not found")
        if not this_run:
            read_metrics(path)  # names RUN_DIR/metrics.json when it is missing or unreadable
        compare[key] = path
    return compare
