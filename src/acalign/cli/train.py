"""``acalign train``: train an aligner on a data directory and export the model."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Train the audio and text encoders on clip-caption pairs of DIR/train.json, select the
checkpoint on DIR/val.json, and write RUN_DIR: config.yaml (the resolved config),
checkpoints/ (last.ckpt and the best by the validation metric), logs/ (CSV and TensorBoard)
and model/ (the exported model, loadable with acalign.load_model).

CONFIG is a YAML file or the name of a bundled config: paper, default, supervised.
Multi-GPU / multi-node training uses Lightning's own flags, e.g.
  acalign train --config default --data DIR --out RUN --accelerator gpu --devices 4 --strategy ddp
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "train",
        help="train an aligner and export the model",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML config file or bundled name (paper|default|supervised)")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="data directory with {train,val}.json and features/")
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="run directory to write")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.ckpt")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's seed)")
    parser.add_argument("--max-epochs", type=int, default=None, metavar="N", help="maximum epochs (default: the config's max_epochs)")
    parser.add_argument("--max-time", type=float, default=None, metavar="MIN", help="time budget in minutes; stops cleanly when spent (default: the config's max_minutes, 6 in the bundled configs)")
    parser.add_argument("--word2vec", type=Path, default=None, metavar="PATH", help="use this word2vec/GloVe file as the frozen text encoder (the paper's setting)")
    parser.add_argument("--accelerator", default=None, help="Lightning accelerator: cpu, gpu, auto, ... (default: auto)")
    parser.add_argument("--devices", default=None, help="Lightning devices: a count, a list like 0,1, or auto (default: auto)")
    parser.add_argument("--num-nodes", type=int, default=None, metavar="N", help="Lightning num_nodes (default: 1)")
    parser.add_argument("--strategy", default=None, help="Lightning strategy, e.g. ddp (default: auto)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, dotted keys for nested ones (e.g. --set model.reduction=mean); repeatable",
    )
    parser.add_argument(
        "--trainer",
        dest="trainer_sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pass any other lightning.Trainer argument (e.g. --trainer limit_train_batches=10); repeatable",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config from the arguments, train, and print where the model went."""
    from acalign.train import parse_key_values, resolve_config, train

    config = resolve_config(
        args.config,
        sets=args.sets,
        seed=args.seed,
        max_epochs=args.max_epochs,
        max_minutes=args.max_time,
        word2vec=args.word2vec,
    )
    overrides = parse_key_values(args.trainer_sets, source="--trainer")
    for name in ("accelerator", "devices", "num_nodes", "strategy"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.no_progress:
        overrides["enable_progress_bar"] = False
    model_dir = train(config, args.data, args.out, resume=args.resume, trainer_overrides=overrides)
    print(f"exported model: {model_dir}")
    return 0
