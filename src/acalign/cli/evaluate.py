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
    from acalign.errors import AcalignError
    from acalign.evaluate import evaluate_run, write_comparison_report

    compare = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AcalignError(f"--compare expects NAME=RUN_DIR, got {item!r}")
        compare[name] = Path(path)
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
        runs = {args.name or args.run_dir.name: args.run_dir, **compare}
        path = write_comparison_report(runs, args.run_dir / "comparison.md")
        print(f"wrote {path}")
    return 0
