"""Benchmark: training and grounding on one CUDA GPU — the reference loop and acalign, same run.

The CPU benchmarks (``bench_train.py``, ``bench_grounding.py``) answer the issue's targets on
2 cores; this one answers "what does a GPU give": it reuses their workers, each in a fresh
process, with the device set to ``cuda``.

Training, on N generated 10 s clips (``bench_train.make_corpus``):

(a) the reference loop (eager fp32, per-item HDF5 reads, impostors redrawn) on the GPU;
(b) ``acalign.train.train`` with ``accelerator=gpu``: the paper config in fp32 and in
    bf16-mixed + channels-last, with 0 and 4 loader workers and with torch.compile, and the
    default config at batch 32 and 128.
    Frozen random 300-d word vectors (a word2vec text file written here) stand in for the
    text encoder, so the script needs no text model on the GPU machine (ours had no
    MiniLM package); frozen vectors are cached either way, so the text side is not what is
    timed. The first epoch warms up cuDNN;
    the table reports the median of the later epochs.

Grounding: ``AcalignModel.ground`` on a one-hour 32 kHz WAV with ``device="cuda"`` (decoding on
the CPU, log-mel and encoder on the GPU), fp32 and bf16, several window batch sizes.

    python benchmarks/bench_gpu.py [--clips 2048] [--epochs 3] [--minutes 60] [--results FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_grounding  # noqa: E402
import bench_train  # noqa: E402
from common import append_section, median, run_worker  # noqa: E402

HERE = Path(__file__).resolve().parent
# (label, config, precision, channels-last, loader workers, other settings)
TRAIN_VARIANTS = [
    ("paper, fp32", "paper", "32", False, 0, {}),
    ("paper, bf16-mixed + channels-last", "paper", "bf16-mixed", True, 0, {}),
    ("paper, bf16-mixed + channels-last, 4 loader workers", "paper", "bf16-mixed", True, 4, {}),
    ("paper, bf16-mixed + channels-last, 4 loader workers, torch.compile", "paper", "bf16-mixed", True, 4,
     {"compile": True}),
    ("default, bf16-mixed + channels-last, 4 loader workers", "default", "bf16-mixed", True, 4, {}),
    ("default, batch 128, bf16-mixed + channels-last, 4 loader workers", "default", "bf16-mixed", True, 4,
     {"batch_size": 128}),
]
# (label, bf16, channels-last, batch)
GROUND_VARIANTS = [
    ("fp32, batch 1", False, False, 1),
    ("fp32, batch 16", False, False, 16),
    ("fp32, batch 64", False, False, 64),
    ("bf16 + channels-last, batch 64", True, True, 64),
]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2048, help="generated training clips (default: 2048)")
    parser.add_argument("--val-clips", type=int, default=128, help="generated validation clips (default: 128)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per acalign run (default: 3)")
    parser.add_argument("--minutes", type=float, default=60.0, help="recording length for grounding")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads (default: 4)")
    parser.add_argument("--device", default="cuda", help="torch device (cpu only to smoke-test the script)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "ground"], help="parts to leave out")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    return parser.parse_args()


def write_word_vectors(path: Path, dim: int = bench_train.TEXT_DIM) -> Path:
    """A word2vec text file (header line, then word and vector) of the generated vocabulary."""
    rng = np.random.default_rng(0)
    words = sorted(set(bench_train.WORDS) | {w for s in bench_train.SOUNDS for w in s[:2]}
                   | set(bench_train.FILLER))
    lines = [f"{len(words)} {dim}"]
    lines += [w + " " + " ".join(f"{v:.5f}" for v in rng.normal(size=dim)) for w in words]
    path.write_text("\n".join(lines) + "\n")
    return path


def device_name(device: str) -> str:
    """The device's name, or exit with a clear message when CUDA is asked for and missing."""
    import torch

    if device == "cpu":
        return f"CPU (smoke test of the script), torch {torch.__version__}"
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device visible (torch.cuda.is_available() is False)")
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"


def bench_training(tmp: Path, args: argparse.Namespace) -> list[str]:
    """Rows of the training table; each contender in its own process."""
    data = bench_train.make_corpus(tmp / "data", n_train=args.clips, n_val=args.val_clips)
    vectors = write_word_vectors(tmp / "vectors.txt")
    text = {"kind": "word2vec", "path": str(vectors)}
    ref = run_worker(bench_train.SCRIPT, {"kind": "reference", "data": str(data), "threads": args.threads,
                                         "device": args.device}, threads=args.threads)
    ref_rate = ref["clips_per_s"]
    split = {k: 1000 * median(v) for k, v in ref["batch_times"].items()}
    print(f"reference: {ref_rate:.0f} clips/s; per batch ms {split}", flush=True)
    rows = [f"| (a) reference loop, eager fp32 | {ref_rate:.0f} | 1.00× | {ref['gpu_mib'] or 0:.0f} | "
            f"{ref['rss_mib']:.0f} |"]
    for label, config, precision, channels_last, workers, other in TRAIN_VARIANTS:
        spec = {"kind": "ours", "config": config, "data": str(data), "threads": args.threads,
                "epochs": args.epochs, "run_dir": str(tmp / f"run-{len(rows)}"),
                "trainer": {"accelerator": "cpu" if args.device == "cpu" else "gpu", "devices": 1},
                "sets": {"precision": precision, "channels_last": channels_last, "num_workers": workers,
                         "max_minutes": None, "model.text": text, **other}}
        try:
            out = run_worker(bench_train.SCRIPT, spec, threads=args.threads)
        except RuntimeError as exc:  # one failing variant (say, compile) must not lose the rest
            reason = str(exc).strip().splitlines()[-1][:120]
            print(f"{label}: failed: {reason}", flush=True)
            rows.append(f"| (b) train(), {label} | failed: {reason} | | | |")
            continue
        later = out["epoch_rates"][1:] or out["epoch_rates"]
        rate = median(later)
        print(f"{label}: epochs {[round(r) for r in out['epoch_rates']]} clips/s", flush=True)
        rows.append(f"| (b) train(), {label} | {rate:.0f} | {rate / ref_rate:.2f}× | "
                    f"{out['gpu_mib'] or 0:.0f} | {out['rss_mib']:.0f} |")
    header = [
        f"{args.clips} generated 10 s clips, batch 32, {args.threads} CPU threads; (b): median clips/s "
        f"of epochs 2–{args.epochs} (epoch 1 warms cuDNN up); frozen random 300-d word vectors as "
        "the text encoder. (a) per batch (median): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in split.items()) + ".",
        "",
        "| training | clips/s | vs (a) | peak GPU MiB | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    return header + rows


def bench_grounding_gpu(tmp: Path, args: argparse.Namespace) -> list[str]:
    """Rows of the grounding table (untrained paper-size model: same speed as a trained one)."""
    from acalign.infer.synthetic import save_random_model

    model = save_random_model(tmp / "model", dim=300)
    bench_grounding.write_recording(tmp / "warmup.wav", minutes=0.5)
    audio = tmp / "long.wav"
    bench_grounding.write_recording(audio, minutes=args.minutes)
    lines = [
        f"One {args.minutes:g}-minute 32 kHz WAV, {len(bench_grounding.PHRASES)} phrases; time covers "
        "decoding (CPU), log-mel, encoder, activations and segments.",
        "",
        "| variant | seconds | real-time factor | peak GPU MiB | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, bf16, channels_last, batch in GROUND_VARIANTS:
        spec = {"model": str(model), "audio": str(audio), "warmup": str(tmp / "warmup.wav"),
                "threads": args.threads, "batch": batch, "bf16": bf16, "channels_last": channels_last,
                "device": args.device}
        out = bench_grounding.spawn(spec, malloc=False)
        rtf = args.minutes * 60 / out["seconds"]
        print(f"{label}: {out['seconds']:.2f} s, {rtf:.0f}x", flush=True)
        lines.append(f"| {label} | {out['seconds']:.2f} | {rtf:.0f}× | {out['gpu_peak_mb'] or 0:.0f} | "
                     f"{out['rss_peak_mib']:.0f} |")
    return lines


def main() -> int:
    """Run both parts on the GPU, print the tables and append them to the results file."""
    args = parse_args()
    device = device_name(args.device)
    body: list[str] = [f"Device: {device}.", ""]
    with tempfile.TemporaryDirectory(prefix="acalign-bench-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        if "train" not in args.skip:
            body += bench_training(tmp, args) + [""]
        if "ground" not in args.skip:
            body += bench_grounding_gpu(tmp, args) + [""]
    text = "\n".join(body)
    print(text)
    if not args.no_append:
        append_section("Training and grounding on a GPU", text, results=args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
