"""Benchmark: how each cost grows from 1× to 4× the data.

* feature extraction time vs number of clips (:func:`acalign.data.features.extract_files`, all
  cores, generated 10 s PCM16 WAV clips);
* training epoch time vs number of training clips (one epoch of ``configs/default.yaml`` through
  :func:`acalign.train.train`, epoch time from its ``EpochThroughput`` callback; validation and
  start-up excluded);
* grounding time vs recording length (``AcalignModel.ground`` end to end on an untrained
  paper-size model, batch 16, fp32, malloc thresholds raised);
* search latency vs index size (:func:`acalign.infer.index.make_faiss_index`, kept exhaustive
  at every size, over random unit-norm 384-d chunk vectors; one query at a time, k = 10).

For each, ``log(cost) = a + b·log(size)`` is fitted and the exponent ``b`` printed (1 = linear).
Reuses the other benchmarks' generators and workers. The whole run stays within a few minutes
(``--scale`` multiplies every base size). A measurement, not a test.

    python benchmarks/bench_scaling.py [--scale 1] [--repeats 3] [--no-append]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_features  # noqa: E402
import bench_grounding  # noqa: E402
import bench_train  # noqa: E402
from common import (  # noqa: E402
    append_section,
    fit_power_law,
    load_average,
    median,
    run_worker,
)

FACTORS = (1, 2, 4)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every base size (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each timed point (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["features", "train", "grounding", "search"])
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results.md")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    return parser.parse_args()


def log(message: str) -> None:
    """Progress on stderr with the load average."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average():.1f}] {message}", file=sys.stderr, flush=True)


def scale_features(tmp: Path, *, base: int, repeats: int) -> list[tuple[int, float]]:
    """Seconds to extract ``base × f`` clips (median of ``repeats``), pool start-up included."""
    from acalign.data.features import FeatureConfig

    config = FeatureConfig()
    paths = bench_features.generate_clips(
        Path(tempfile.gettempdir()) / "acalign-bench-scaling-wav", count=base * FACTORS[-1],
        seconds=10.0, rate=config.sample_rate,
    )
    bench_features.warm_page_cache(paths)
    points = []
    for factor in FACTORS:
        n = base * factor
        times = []
        for _ in range(repeats):
            out = bench_features.run_acalign(paths[:n], tmp / f"feat-{n}.h5", config, None)
            times.append(out[0] if isinstance(out, tuple) else out)  # (wall, CPU) or wall seconds
        points.append((n, median(times)))
        log(f"features: {n} clips {points[-1][1]:.2f} s")
    return points


def scale_train(tmp: Path, *, base: int, threads: int) -> list[tuple[int, float]]:
    """Epoch seconds (clips / the epoch's clips/s) of configs/default.yaml for ``base × f`` clips."""
    points = []
    for factor in FACTORS:
        n = base * factor
        data = bench_train.make_corpus(tmp / f"train-{n}", n_train=n, n_val=16)
        spec = {"kind": "ours", "config": "default", "data": str(data), "threads": threads,
                "run_dir": str(tmp / f"run-{n}")}
        out = run_worker(bench_train.SCRIPT, spec, threads=threads)
        points.append((n, n / out["clips_per_s"]))
        log(f"train: {n} clips, epoch {points[-1][1]:.1f} s")
    return points


def scale_grounding(tmp: Path, *, base_minutes: float, threads: int) -> list[tuple[float, float]]:
    """Seconds to ground 3 phrases in ``base_minutes × f`` of audio (fresh process each)."""
    from acalign.infer.synthetic import save_random_model

    model = save_random_model(tmp / "model", dim=300)
    bench_grounding.write_recording(tmp / "warmup.wav", minutes=0.5)
    points = []
    for factor in FACTORS:
        minutes = base_minutes * factor
        audio = tmp / f"{minutes:g}min.wav"
        bench_grounding.write_recording(audio, minutes=minutes)
        spec = {"model": str(model), "audio": str(audio), "warmup": str(tmp / "warmup.wav"),
                "threads": threads, "batch": 16, "bf16": False, "channels_last": False}
        result = bench_grounding.spawn(spec, malloc=True)
        points.append((minutes, result["seconds"]))
        log(f"grounding: {minutes:g} min in {result['seconds']:.2f} s")
    return points


def scale_search(*, base: int, repeats: int, threads: int) -> list[tuple[int, float]]:
    """Median latency (s) of one k=10 query against ``base × f`` random unit 384-d vectors."""
    import faiss

    from acalign.infer.index import IndexSettings, make_faiss_index

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    largest = rng.standard_normal((base * FACTORS[-1], 384), dtype=np.float32)
    largest /= np.linalg.norm(largest, axis=1, keepdims=True)
    queries = rng.standard_normal((100, 384), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    points = []
    for factor in FACTORS:
        n = base * factor
        # exhaustive at every size (the default switches to IVF past flat_max_chunks, which
        # would mix two index types in one fit)
        settings = IndexSettings(flat_max_chunks=max(IndexSettings().flat_max_chunks, len(largest)))
        index, kind = make_faiss_index(np.ascontiguousarray(largest[:n]), settings=settings)
        index.search(queries[:5], 10)
        latencies = []
        for _ in range(repeats):
            for q in queries:
                t0 = time.perf_counter()
                index.search(q[None, :], 10)
                latencies.append(time.perf_counter() - t0)
        points.append((n, median(latencies)))
        log(f"search: {n} vectors ({kind}) {1000 * points[-1][1]:.2f} ms/query")
    return points


def main() -> int:
    """Run each scaling benchmark, fit exponents, print and append."""
    args = parse_args()
    loads = [load_average()]
    start = time.perf_counter()
    results: dict[str, tuple[str, str, list[tuple[Any, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="acalign-bench-scaling-") as tmp:
        tmp_dir = Path(tmp)
        if "features" not in args.skip:
            results["feature extraction"] = ("clips", "s", scale_features(
                tmp_dir, base=int(96 * args.scale), repeats=args.repeats))
            loads.append(load_average())
        if "train" not in args.skip:
            results["training epoch (default.yaml)"] = ("clips", "s", scale_train(
                tmp_dir, base=int(64 * args.scale), threads=args.threads))
            loads.append(load_average())
        if "grounding" not in args.skip:
            results["grounding 3 phrases"] = ("minutes of audio", "s", scale_grounding(
                tmp_dir, base_minutes=2.0 * args.scale, threads=args.threads))
            loads.append(load_average())
        if "search" not in args.skip:
            results["search latency (FAISS flat IP, 384-d)"] = ("vectors", "ms", [
                (n, 1000 * s) for n, s in scale_search(base=int(25_000 * args.scale), repeats=args.repeats,
                                                       threads=args.threads)])
            loads.append(load_average())
    lines = [
        f"Sizes 1×, 2×, 4×; fit log(cost) = a + b·log(size); b = 1 is linear. {args.threads} threads; "
        f"medians of {args.repeats} repeats (features, search) or one run per point (training, grounding). "
        f"Total {time.perf_counter() - start:.0f} s.",
        "",
        "| benchmark | size | 1× | 2× | 4× | exponent b |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    summary = []
    for name, (unit, cost_unit, points) in results.items():
        _, b = fit_power_law([p[0] for p in points], [p[1] for p in points])
        sizes = " → ".join(f"{p[0]:g}" for p in points)
        costs = " | ".join(f"{p[1]:.3g} {cost_unit}" for p in points)
        lines.append(f"| {name} | {sizes} {unit} | {costs} | {b:.2f} |")
        summary.append(f"{name}: exponent b = {b:.2f} ({sizes} {unit})")
    body = "\n".join(lines) + "\n"
    print("\n".join(summary))
    print()
    print(body)
    if not args.no_append:
        append_section("Scaling from 1× to 4× the data", body, results=args.results, load=loads)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
