"""Benchmark 1: log-mel extraction of 10 s clips into HDF5, reference approach vs acalign.

(a) reference — what the paper's scripts do: per file ``librosa.load(sr=...)`` (soxr_hq), then
    ``librosa.feature.melspectrogram`` + ``np.log(S + eps)``, one process, one HDF5 dataset per
    clip;
(b) acalign — :func:`acalign.data.features.extract_files` with all usable cores.

Both run in the same invocation on the same files, for each data source: the first 500 clips of
the embedded corpus (32 kHz, written by ``make demo``; ``--data`` names another folder), then 500
generated PCM16 WAV clips at 44.1 kHz, which both sides must resample. Prints a table per source
and appends them to ``benchmarks/results.md``. A measurement, not a test: it asserts nothing
about speed.

    python benchmarks/bench_features.py [--clips 500] [--repeats 3] [--data DIR] [--sources corpus generated]
"""

from __future__ import annotations

import os

# The reference is one process doing one clip at a time; let its numpy/OpenBLAS use one thread.
# With the default (one per core) on a shared, busy machine, OpenBLAS threads spin-wait and its
# mel matmul became ~8× slower, which would flatter our ratio. Our workers use torch (1 thread).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common import median, median_with_range, positive_int  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "acalign-bench-features"
DEFAULT_CORPUS = HERE.parent / "runs" / "demo" / "corpus" / "audio" / "train"


def parse_args() -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=500, help="clips per data source (default: 500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default: 10)")
    parser.add_argument("--rate", type=int, default=44100, help="rate of generated clips (default: 44100)")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"corpus audio folder (default: {DEFAULT_CORPUS.relative_to(HERE.parent)}, "
                             "written by `make demo`); its first --clips files are used")
    parser.add_argument("--sources", nargs="+", default=["corpus", "generated"],
                        choices=["corpus", "generated"], help="data to measure on (default: both)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where generated clips are kept (default: {DEFAULT_CACHE})")
    parser.add_argument("--workers", type=int, default=None, help="acalign workers (default: all cores)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="rounds of (reference, acalign) per source, interleaved; medians are "
                             "reported (default: 3)")
    parser.add_argument("--results", type=Path, default=HERE / "results.md",
                        help="markdown file the section is appended to (default: benchmarks/results.md)")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    return parser.parse_args()


def generate_clips(folder: Path, *, count: int, seconds: float, rate: int) -> list[Path]:
    """Write ``count`` seeded PCM16 clips (noise + tones + a chirp) once; reuse them afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{k:04d}.wav" for k in range(count)]
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    for k, path in enumerate(paths):
        if path.is_file() and sf.info(str(path)).frames == n and sf.info(str(path)).samplerate == rate:
            continue
        f0 = 100.0 + 40.0 * (k % 50)
        y = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * f0 * t)
        y += 0.2 * np.sin(2 * np.pi * (200.0 * t + 300.0 * t**2)) * (t > seconds / 2)
        sf.write(path, y.astype(np.float32), rate, subtype="PCM_16")
    return paths


def warm_page_cache(paths: list[Path]) -> None:
    """Read every file once so both contenders find them in the page cache."""
    for path in paths:
        path.read_bytes()


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_reference(paths: list[Path], out: Path, config) -> tuple[float, float, dict[str, float]]:  # noqa: ANN001
    """The reference approach; return (wall seconds, CPU seconds, per-stage wall seconds)."""
    import h5py
    import librosa

    # One untimed clip first: librosa's lazy imports and caches are not per-clip costs.
    y, _ = librosa.load(paths[0], sr=config.sample_rate)
    librosa.feature.melspectrogram(y=y, sr=config.sample_rate, n_fft=config.n_fft,
                                   hop_length=config.hop_length, win_length=config.win_length,
                                   n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax)
    stages = {"load (decode + soxr_hq)": 0.0, "log-mel": 0.0, "HDF5 write": 0.0}
    cpu_start, start = cpu_seconds(), time.perf_counter()
    with h5py.File(out, "w") as handle:
        for path in paths:
            t0 = time.perf_counter()
            y, _ = librosa.load(path, sr=config.sample_rate)
            t1 = time.perf_counter()
            mel = librosa.feature.melspectrogram(
                y=y, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
                win_length=config.win_length, n_mels=config.n_mels, fmin=config.fmin,
                fmax=config.fmax, power=2.0,
            )
            feats = np.log(mel + config.log_eps).T
            t2 = time.perf_counter()
            handle.create_dataset(path.name, data=feats)
            t3 = time.perf_counter()
            stages["load (decode + soxr_hq)"] += t1 - t0
            stages["log-mel"] += t2 - t1
            stages["HDF5 write"] += t3 - t2
    return time.perf_counter() - start, cpu_seconds() - cpu_start, stages


def run_acalign(paths: list[Path], out: Path, config, workers: int | None) -> tuple[float, float]:  # noqa: ANN001
    """``extract_files`` with a pool; return (wall seconds, CPU seconds of writer + workers)."""
    from acalign.data.features import extract_files

    items = [(p.name, p) for p in paths]
    cpu_start, start = cpu_seconds(), time.perf_counter()
    extract_files(items, out, config, workers=workers, overwrite=True, progress=False)
    return time.perf_counter() - start, cpu_seconds() - cpu_start


def profile_acalign_stages(paths: list[Path], config) -> dict[str, float]:  # noqa: ANN001
    """Per-clip stage times of our pipeline in one worker-like process (malloc tuned, 1 thread)."""
    import torch

    from acalign.data.audio import _decode_file, resample
    from acalign.data.features import log_mel
    from acalign.runtime import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()
    stages = {"decode": 0.0, "resample (soxr HQ)": 0.0, "log-mel (torch FFT)": 0.0}
    for path in paths:
        t0 = time.perf_counter()
        mono, rate = _decode_file(path)
        t1 = time.perf_counter()
        y = resample(mono, source_rate=rate, sample_rate=config.sample_rate)
        t2 = time.perf_counter()
        log_mel(y, config)
        t3 = time.perf_counter()
        stages["decode"] += t1 - t0
        stages["resample (soxr HQ)"] += t2 - t1
        stages["log-mel (torch FFT)"] += t3 - t2
    return {k: v / len(paths) for k, v in stages.items()}


def max_difference(reference: Path, ours: Path, names: list[str]) -> float:
    """Largest |difference| between the two stores over ``names``."""
    import h5py

    from acalign.data.features import FeatureStore

    worst = 0.0
    with h5py.File(reference, "r") as ref, FeatureStore(ours) as store:
        for name in names:
            worst = max(worst, float(np.abs(ref[name][()] - store[name]).max()))
    return worst


def machine() -> str:
    """CPU model and usable cores."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def corpus_clips(folder: Path | None, count: int) -> list[Path]:
    """The first ``count`` WAV/FLAC files of ``folder`` (default: the demo corpus's training audio)."""
    folder = folder or DEFAULT_CORPUS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".wav", ".flac"})[:count]


def measure(paths: list[Path], source: str, config, workers: int, repeats: int) -> str:  # noqa: ANN001
    """Both contenders on ``paths``, ``repeats`` interleaved rounds; the markdown rows and notes.

    Each round runs the reference, then acalign, so drift in the machine's load hits both
    alike; the ratio is the median of the rounds' own ratios.
    """
    warm_page_cache(paths)
    load_before = os.getloadavg()[0]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        ref_out, our_out = Path(tmp) / "reference.h5", Path(tmp) / "acalign.h5"
        for _ in range(repeats):
            ref_seconds, ref_cpu, ref_stages = run_reference(paths, ref_out, config)
            our_seconds, our_cpu = run_acalign(paths, our_out, config, workers)
            rounds.append((ref_seconds, ref_cpu, our_seconds, our_cpu, ref_stages))
        diff = max_difference(ref_out, our_out, [p.name for p in paths[:20]])
    stages = profile_acalign_stages(paths[:50], config)
    load_after = os.getloadavg()[0]

    n = len(paths)
    ref_rates = [n / r[0] for r in rounds]
    our_rates = [n / r[2] for r in rounds]
    ratios = [ours / ref for ref, ours in zip(ref_rates, our_rates, strict=True)]

    def per_clip_ms(index: int) -> str:
        return median_with_range([1000 * r[index] / n for r in rounds], ".2f")

    ref_stages = {k: median([r[4][k] for r in rounds]) for k in rounds[0][4]}
    rows = [
        "| approach | clips/s | ms/clip (wall) | CPU ms/clip | ratio (clips/s) |",
        "| --- | --- | --- | --- | --- |",
        f"| reference: librosa.load + melspectrogram, 1 process | {median_with_range(ref_rates, '.1f')} | "
        f"{per_clip_ms(0)} | {per_clip_ms(1)} | 1.00× |",
        f"| acalign extract_files, {workers} workers + writer | {median_with_range(our_rates, '.1f')} | "
        f"{per_clip_ms(2)} | {per_clip_ms(3)} | {median_with_range(ratios, '.2f')}× |",
    ]
    ref_detail = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in ref_stages.items())
    our_detail = ", ".join(f"{k} {1000 * v:.2f}" for k, v in stages.items())
    notes = [
        f"- data: {source}; features {config.sample_rate} Hz, {config.n_mels} mels, "
        f"n_fft {config.n_fft}, hop {config.hop_length}",
        f"- {len(rounds)} interleaved rounds (reference, then acalign); median (min–max); the "
        "ratio is the median of each round's own ratio",
        f"- reference stages (ms/clip, median): {ref_detail}",
        f"- acalign stages in one worker-like process (ms/clip, first 50 clips): {our_detail}",
        f"- max |acalign − reference| over 20 clips: {diff:.2e} (log units)",
        f"- load average (1 min) before/after: {load_before:.2f} / {load_after:.2f} (the machine is shared)",
    ]
    return "\n".join(rows + [""] + notes)


def main() -> int:
    """Run both contenders on each data source and report."""
    args = parse_args()
    from acalign.data.features import FeatureConfig, _resolve_workers

    config = FeatureConfig()
    workers = _resolve_workers(args.workers)
    sources: list[tuple[str, list[Path]]] = []
    if "corpus" in args.sources:
        paths = corpus_clips(args.data, args.clips)
        if paths:
            info = sf.info(str(paths[0]))
            sources.append((f"{len(paths)} corpus clips from {args.data or DEFAULT_CORPUS} "
                            f"({info.samplerate} Hz {info.subtype})", paths))
        else:
            print(f"no corpus audio at {args.data or DEFAULT_CORPUS} (run `make demo` or pass --data); "
                  "measuring generated clips only")
    if "generated" in args.sources:
        paths = generate_clips(args.cache, count=args.clips, seconds=args.seconds, rate=args.rate)
        sources.append((f"{len(paths)} generated {args.seconds:g} s PCM16 WAV clips at {args.rate} Hz "
                        "(resampled to 32 kHz by both)", paths))
    sections = []
    for source, paths in sources:
        print(f"measuring {source} ...", flush=True)
        section = measure(paths, source, config, workers, args.repeats)
        print(section + "\n", flush=True)
        sections.append(section)
    if not args.no_append and sections:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        header = f"\n## Feature extraction ({stamp}; {machine()})\n\n"
        with args.results.open("a") as handle:
            handle.write(header + "\n\n".join(sections) + "\n")
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
