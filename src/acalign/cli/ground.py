"""``acalign ground``: when does each phrase happen in a recording?"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Ground sound phrases in one recording with an exported model: for each phrase, the
segments (onset, offset, score) where its frame activation is above the threshold.

AUDIO may be WAV, FLAC, Ogg or MP3 at any sample rate, mono or multichannel, of any length:
recordings longer than 10 s are processed in overlapping windows with constant memory.
The threshold and median filter default to the values chosen on validation, stored in
MODEL/inference.json.
"""

EPILOG = """\
examples:
  acalign ground runs/demo/default/model street.flac "a dog barks" "wind blows"
  acalign ground MODEL walk.mp3 "birds chirp" --format tsv > events.tsv
  acalign ground MODEL hour.wav "a car passes" --threshold 0.4 --median-filter 0.5 --plot car.png
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ground`` subcommand."""
    parser = subparsers.add_parser(
        "ground",
        help="find when sound phrases happen in a recording",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="exported model directory")
    parser.add_argument("audio", type=Path, metavar="AUDIO", help="audio file to search in")
    parser.add_argument("phrases", nargs="+", metavar="PHRASE", help='sound phrase, e.g. "a dog barks"')
    parser.add_argument(
        "--format",
        choices=("table", "json", "tsv"),
        default="table",
        help="table (readable, default), json, or tsv (DCASE rows: filename, onset, offset, "
        "event_label, score)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, metavar="X",
        help="activation threshold (default: the model's, from inference.json)",
    )
    parser.add_argument(
        "--median-filter", type=float, default=None, metavar="SECONDS",
        help="median filter length in seconds, 0 for none (default: the model's)",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="PNG",
        help="also draw the spectrogram and each phrase's activation to this PNG",
    )
    parser.add_argument(
        "--bf16", action="store_true",
        help="run the audio encoder in bfloat16: faster on GPUs and on CPUs with "
        "AVX-512 BF16 or AMX, much slower on others (AVX2 only); activations differ by ~1e-2",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, ground the phrases, print the chosen format, optionally plot."""
    import json

    from acalign.data.audio import audio_duration
    from acalign.errors import AcalignError
    from acalign.infer.grounding import (
        grounding_to_dict,
        grounding_to_table,
        grounding_to_tsv,
        overview_log_mel,
        plot_grounding,
    )
    from acalign.infer.model import load_model

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise AcalignError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.median_filter is not None and args.median_filter < 0:
        raise AcalignError(f"--median-filter must be >= 0 seconds, got {args.median_filter}")
    from acalign.runtime import tune_malloc

    tune_malloc()
    model = load_model(args.model, bf16=args.bf16)
    duration = audio_duration(args.audio)  # a missing or unreadable file fails here, first
    results = model.ground(
        args.audio, args.phrases, threshold=args.threshold, median_filter=args.median_filter
    )
    threshold = model.threshold if args.threshold is None else args.threshold
    median = model.median_filter_seconds if args.median_filter is None else args.median_filter
    name = str(args.audio)
    if args.format == "json":
        summary = grounding_to_dict(
            results, filename=name, duration=duration, threshold=threshold,
            median_filter_seconds=median,
        )
        print(json.dumps(summary, indent=2))
    elif args.format == "tsv":
        print(grounding_to_tsv(results, filename=args.audio.name), end="")
    else:
        print(grounding_to_table(results, filename=name, duration=duration, threshold=threshold), end="")
    if args.plot is not None:
        spectrogram, rate = overview_log_mel(args.audio, feature_config=model.feature_config)
        plot_grounding(
            results, spectrogram=spectrogram, columns_per_second=rate, path=args.plot,
            threshold=threshold, title=name,
        )
    return 0
