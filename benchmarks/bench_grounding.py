"""Benchmark: grounding phrases in a one-hour recording — real-time factor and peak memory.

Writes a one-hour 32 kHz PCM16 WAV (and a 15-minute one) to a temporary folder, then times
``AcalignModel.ground(path, phrases)`` end to end: streaming decode, log-mel, the CRNN over
10 s windows with 2 s overlap, activations, segments. Real-time factor = seconds of audio per
second of compute. Peak RSS (``resource.getrusage``) is read in a fresh process per run, so the
15-minute and 60-minute figures show whether memory grows with length.

Without ``--model`` it uses an untrained model of the paper's size (CRNN, 300-d) — same speed
as a trained one. Variants: batch 1 float32 with each window encoded on its own (what a
per-window loop does, the baseline), and batches of 16 in float32 / bfloat16, channels-last,
with glibc's malloc thresholds raised, each window encoded on its own or with overlapping windows
sharing log-mel and the convolutions (the default since 2026-11-30).

    python benchmarks/bench_grounding.py [--model RUN_DIR/model] [--minutes 60 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import median, median_with_range, positive_int

HERE = Path(__file__).resolve().parent
PHRASES = ["a dog barks", "birds chirp", "a dog barks while birds sing"]
# (name, batch size, bf16, channels-last, malloc tuned, windows share their convolutions)
VARIANTS = [
    ("fp32, batch 1 (baseline)", 1, False, False, False, False),
    ("fp32, batch 16", 16, False, False, False, False),
    ("fp32, batch 16, malloc tuned", 16, False, False, True, False),
    ("fp32 + channels-last, batch 16, malloc tuned", 16, False, True, True, False),
    ("fp32 + channels-last, batch 16, malloc tuned, shared convs", 16, False, True, True, True),
    ("bf16 + channels-last, batch 16, malloc tuned", 16, True, True, True, False),
    ("bf16 + channels-last, batch 16, malloc tuned, shared convs", 16, True, True, True, True),
]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def parse_args() -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="exported model (default: untrained paper-size)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[60.0, 15.0], help="recording lengths")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--variants", type=int, nargs="+", default=None, help="indices into the variant list")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="rounds over the variants per length, interleaved; medians are reported "
                             "(default: 3)")
    parser.add_argument("--results", type=Path, default=HERE / "results.md", help="markdown file to append to")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def write_recording(path: Path, *, minutes: float, rate: int = 32000) -> None:
    """Write a seeded PCM16 recording minute by minute (faint noise, a few band-noise events)."""
    import numpy as np
    import soundfile as sf

    from acalign.infer.synthetic import scene

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for minute in range(int(np.ceil(minutes))):
            seconds = min(60.0, minutes * 60 - minute * 60)
            onset = float(rng.uniform(0, max(0.0, seconds - 5)))
            events = [(("dog", "bird")[minute % 2], onset, onset + 3.0)]
            out.write(scene(seconds, events, sample_rate=rate, rng=rng))


def run_worker(spec: dict) -> dict:
    """In a fresh process: load the model, warm up, ground the recording once, report."""
    import torch

    from acalign.infer.model import load_model

    torch.set_num_threads(spec["threads"])
    model = load_model(
        spec["model"], bf16=spec["bf16"], channels_last=spec["channels_last"], batch_size=spec["batch"],
        share_convolutions=spec.get("shared", True), device=spec.get("device", "cpu"),
    )
    warm = Path(spec["warmup"])
    model.ground(warm, PHRASES)
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    results = model.ground(Path(spec["audio"]), PHRASES)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frames = results[0].activation.shape[0]
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    return {
        "seconds": seconds, "cpu_seconds": cpu, "frames": frames, "gpu_peak_mb": gpu,
        "rss_ready_mib": rss_ready, "rss_peak_mib": rss_peak, "load": os.getloadavg()[0],
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spawn(spec: dict, *, malloc: bool) -> dict:
    """Run one measurement in a child process (fresh peak RSS) and return its JSON."""
    env = dict(os.environ, **(MALLOC_ENV if malloc else {}))
    env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    """Generate recordings, run every variant and length, print and append a table."""
    args = parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    from acalign.infer.synthetic import save_random_model
    from acalign.runtime import cpu_has_native_bf16

    if args.variants:
        variants = [VARIANTS[i] for i in args.variants]
    elif cpu_has_native_bf16():
        variants = VARIANTS
    else:
        variants = [v for v in VARIANTS if not v[2]]
        print("this CPU emulates bf16 (no AVX-512 BF16 / AMX): bf16 variants left out "
              "(--variants 5 6 runs them)", flush=True)
    with tempfile.TemporaryDirectory(prefix="acalign-bench-ground-") as tmp:
        tmp_dir = Path(tmp)
        model = args.model or save_random_model(tmp_dir / "model", dim=300)
        model_name = str(args.model) if args.model else "untrained paper-size CRNN (300-d)"
        write_recording(tmp_dir / "warmup.wav", minutes=0.5)
        rows = []
        for minutes in args.minutes:
            audio = tmp_dir / f"{minutes:g}min.wav"
            write_recording(audio, minutes=minutes)
            measured: dict[str, list[dict]] = {}
            for _ in range(args.repeats):  # rounds over all variants: drift hits each alike
                for name, batch, bf16, channels_last, malloc, shared in variants:
                    spec = {
                        "model": str(model), "audio": str(audio), "warmup": str(tmp_dir / "warmup.wav"),
                        "threads": args.threads, "batch": batch, "bf16": bf16,
                        "channels_last": channels_last, "shared": shared,
                    }
                    result = spawn(spec, malloc=malloc)
                    measured.setdefault(name, []).append(result)
                    print(f"{name:<46} {minutes:>5g} min  {result['seconds']:7.2f} s  "
                          f"{minutes * 60 / result['seconds']:7.0f}x  "
                          f"{minutes * 60 / result['cpu_seconds']:6.0f} s/CPU-s  load {result['load']:.1f}  "
                          f"RSS ready {result['rss_ready_mib']:6.0f} MiB  peak {result['rss_peak_mib']:6.0f} MiB",
                          flush=True)
            rows += [summarise(name, minutes, results) for name, results in measured.items()]
    table = format_table(rows, model_name=model_name, threads=args.threads)
    print("\n" + table)
    if not args.no_append:
        with open(args.results, "a") as handle:
            handle.write("\n" + table)
    return 0


def summarise(name: str, minutes: float, results: list[dict]) -> tuple:
    """One table row from a variant's rounds: median time, real-time factor as median (min–max),
    the highest peak RSS."""
    audio_seconds = minutes * 60
    factor = median_with_range([audio_seconds / r["seconds"] for r in results], ".0f", unit="x")
    return (name, minutes, median([r["seconds"] for r in results]), factor,
            median([audio_seconds / r["cpu_seconds"] for r in results]), results[-1]["load"],
            median([r["rss_ready_mib"] for r in results]), max(r["rss_peak_mib"] for r in results))


def format_table(rows: list[tuple], *, model_name: str, threads: int) -> str:
    """Markdown section with the measurements and the conditions they were taken under."""
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"## Grounding a long recording ({when})",
        "",
        f"Model: {model_name}; {len(PHRASES)} phrases; {threads} torch threads; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible. "
        "Time covers decoding, features, encoder, activations and segments. The machine is shared: "
        "'load' is the 1-minute load average at the end of the run (2 means both cores busy); "
        "audio seconds per CPU-second is less sensitive to other processes than wall time. "
        "Each variant ran once per round, rounds interleaved: times are medians, the real-time "
        "factor is median (min–max), the peak RSS the highest of the rounds.",
        "",
        "| variant | audio | seconds | real-time factor | audio s per CPU-s | load | RSS after warm-up | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {minutes:g} min | {seconds:.2f} | {rtf} | {per_cpu:.0f} | {load:.1f} "
        f"| {ready:.0f} MiB | {peak:.0f} MiB |"
        for name, minutes, seconds, rtf, per_cpu, load, ready, peak in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
