"""Benchmark: search an indexed audio library — two-stage recall and query latency by size.

(a) ``--data DIR --model RUN_DIR/model``: index the audio of one split (``DIR/audio/{split}``),
    query it with every caption of ``DIR/{split}.json`` and report recall@10 of the two-stage
    search (FAISS candidates + exact frame-level re-rank) against exhaustive frame-level
    scoring of every clip (target >= 0.95), with both latencies.
(b) Scale, always: indexes of 10k, 100k and 1M clips of 10 s whose embeddings are GENERATED,
    not computed from audio (embedding 1M clips would take days here): each clip mixes one to
    three of 500 random "sound" directions over a background direction, frame by frame, and a
    query's words point near some of those sounds. Reported: p50/p95 latency of two-stage
    search, index bytes per clip, RSS; at 10k also exhaustive frame-level search and recall@10.
    Stored frames are generated for at most ``--frame-clips`` (100k) clips; at 1M, the other
    900k clips are perturbed copies of those clips' FAISS vectors and share their stored frames,
    so the 1M row times FAISS over 1M vectors plus a re-rank that reads as much data as a real
    one. Queries run on one thread (``--threads 1``): a query is too small to share two cores,
    which can serve two queries at once instead.

    python benchmarks/bench_search.py [--data DIR --model RUN_DIR/model] [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROWS_PER_CLIP = 50  # 10 s at the default 0.2 s storage resolution
N_SOUNDS = 500


def parse_args() -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data directory with {split}.json and audio/")
    parser.add_argument("--model", type=Path, default=None, help="exported model for --data")
    parser.add_argument("--split", default="test", help="split of --data (default: test)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--frame-clips", type=int, default=100_000, help="clips with their own stored frames")
    parser.add_argument("--dim", type=int, default=300, help="embedding size of generated clips")
    parser.add_argument("--queries", type=int, default=200, help="queries per size")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch/FAISS threads (default: 1)")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    return parser.parse_args()


def rss_mib() -> float:
    """Current resident memory of this process in MiB (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(times: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


# --------------------------------------------------------------------------- (a) real data


def bench_real(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Index one split with the model and compare two-stage search with exhaustive scoring."""
    from acalign.data.manifest import read_manifest
    from acalign.infer.index import build_index, load_index, recall_at_k
    from acalign.infer.model import load_model

    manifest = read_manifest(args.data / f"{args.split}.json")
    model = load_model(args.model)
    report = build_index(model, args.data / "audio" / args.split, tmp / "real-index", progress=True)
    index = load_index(tmp / "real-index", model)
    captions = [caption.text for _, caption in manifest.captions()][: args.queries * 5]
    recalls, narrow, fast, slow = [], [], [], []
    for text in captions:
        start = time.perf_counter()
        hits = index.search(text, k=10)
        fast.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = index.search_exhaustive(text, k=10)
        slow.append(time.perf_counter() - start)
        recalls.append(recall_at_k(hits, reference, k=10))
        # a small split fits in the default candidate lists; 10 per probe shows the margin
        narrow.append(recall_at_k(index.search(text, k=10, n_candidates=10), reference, k=10))
    p50, p95 = percentiles(fast)
    e50, e95 = percentiles(slow)
    line = (
        f"| {args.data.name}/{args.split} ({report.n_files} clips, {len(captions)} captions) "
        f"| {np.mean(recalls):.3f} | {np.mean(narrow):.3f} | {p50:.1f} / {p95:.1f} | {e50:.1f} / {e95:.1f} |"
    )
    print(line, flush=True)
    return [
        f"Model {args.model}; recall@10 of two-stage search against exhaustive frame-level scoring "
        f"(default candidates: max(100, 10k) chunks per probe; narrow: 10 per probe).",
        "",
        "| split | recall@10 | recall@10, narrow | two-stage p50 / p95 ms | exhaustive p50 / p95 ms |",
        "| --- | --- | --- | --- | --- |",
        line,
        "",
    ]


# --------------------------------------------------------------------------- (b) generated


class GeneratedModel:
    """Stands in for an AcalignModel: text queries map to noisy sound directions."""

    def __init__(self, sounds: np.ndarray) -> None:
        self.sounds = sounds
        self.identity = "generated"
        self.path = Path("generated")
        self.reduction = "mean"

    def embed_text(self, captions: list[str]) -> list[np.ndarray]:
        """Each caption: 1-2 sound words near sound directions, plus 1-2 filler words (the
        same words every time for the same caption)."""
        out = []
        for caption in captions:
            rng = np.random.default_rng(zlib.crc32(caption.encode()))
            dim = self.sounds.shape[1]
            picks = rng.choice(len(self.sounds), size=int(rng.integers(1, 3)), replace=False)
            words = [self.sounds[k] + 0.4 * rng.standard_normal(dim) / np.sqrt(dim) for k in picks]
            words += [rng.standard_normal(dim) for _ in range(int(rng.integers(1, 3)))]
            words = np.stack(words).astype(np.float32)
            out.append(words / np.linalg.norm(words, axis=1, keepdims=True))
        return out


def generated_rows(n_clips: int, sounds: np.ndarray, background: np.ndarray, rng) -> np.ndarray:
    """Pooled frame embeddings ``(n_clips, ROWS_PER_CLIP, D)``: background + active sounds + noise."""
    dim = sounds.shape[1]
    rows = np.repeat(background[None, None, :] * 0.6, n_clips, axis=0).repeat(ROWS_PER_CLIP, axis=1)
    for _ in range(3):
        present = rng.random(n_clips) < 0.6
        which = rng.integers(0, len(sounds), n_clips)
        onset = rng.integers(0, ROWS_PER_CLIP - 5, n_clips)
        length = rng.integers(5, ROWS_PER_CLIP, n_clips)
        t = np.arange(ROWS_PER_CLIP)[None, :]
        active = present[:, None] & (t >= onset[:, None]) & (t < (onset + length)[:, None])
        rows += active[:, :, None] * sounds[which][:, None, :]
    rows += 0.5 * rng.standard_normal(rows.shape).astype(np.float32) / np.sqrt(dim)
    return rows / np.linalg.norm(rows, axis=2, keepdims=True)


def write_generated_index(out: Path, *, n_clips: int, frame_clips: int, dim: int, rng) -> GeneratedModel:
    """Write an index directory in :mod:`acalign.infer.index`'s format from generated embeddings."""
    from acalign.config import atomic_write_json
    from acalign.infer.index import INDEX_FORMAT, IndexSettings, _write_faiss, make_faiss_index

    out.mkdir(parents=True, exist_ok=True)
    sounds = rng.standard_normal((N_SOUNDS, dim)).astype(np.float32)
    sounds /= np.linalg.norm(sounds, axis=1, keepdims=True)
    background = rng.standard_normal(dim).astype(np.float32)
    background /= np.linalg.norm(background)
    shard = uuid.uuid4().hex[:12]
    stored = min(n_clips, frame_clips)
    chunks = np.empty((n_clips, dim), dtype=np.float32)
    with open(out / f"frames-{shard}.f16", "wb") as frames_out:
        for start in range(0, stored, 5000):
            count = min(5000, stored - start)
            rows = generated_rows(count, sounds, background, rng).astype(np.float16)
            chunks[start : start + count] = rows.astype(np.float32).mean(axis=1)
            frames_out.write(rows.tobytes())
    for start in range(stored, n_clips, stored):  # beyond: perturbed copies sharing frames
        count = min(stored, n_clips - start)
        noise = rng.standard_normal((count, dim)).astype(np.float32) * (0.1 / np.sqrt(dim))
        chunks[start : start + count] = chunks[:count] + noise
    (out / f"chunks-{shard}.f32").write_bytes(b"")  # only needed to rebuild FAISS
    settings = IndexSettings()
    index, kind = make_faiss_index(chunks, settings=settings)
    _write_faiss(index, out / "faiss-gen.index")
    files = [
        {
            "file_id": f"clip{i:07d}.wav", "size": 0, "mtime_ns": 0, "duration": 10.0, "shard": shard,
            "row": (i % stored) * ROWS_PER_CLIP, "n_frames": ROWS_PER_CLIP, "chunk_row": i, "n_chunks": 1,
        }
        for i in range(n_clips)
    ]
    atomic_write_json(
        out / "index.json",
        {
            "format": INDEX_FORMAT, "model": {"identity": "generated", "path": "generated"},
            "root": str(out), "dim": dim, "frame_rate": 50.0, "reduction": "mean",
            "settings": asdict(settings), "index_type": kind, "faiss": "faiss-gen.index",
            "shards": {shard: {"frames": stored * ROWS_PER_CLIP, "chunks": 0}}, "files": files,
        },
        indent=None,
    )
    return GeneratedModel(sounds)


def bench_size(n_clips: int, args: argparse.Namespace, tmp: Path) -> dict:
    """Build a generated index of ``n_clips``, time queries, measure memory and disk."""
    from acalign.infer.index import load_index, recall_at_k

    rng = np.random.default_rng(n_clips)
    folder = tmp / f"gen-{n_clips}"
    start = time.perf_counter()
    model = write_generated_index(folder, n_clips=n_clips, frame_clips=args.frame_clips, dim=args.dim, rng=rng)
    build_s = time.perf_counter() - start
    before = rss_mib()
    start = time.perf_counter()
    index = load_index(folder, model)
    open_s = time.perf_counter() - start
    index_mib = rss_mib() - before
    queries = [f"q{i}" for i in range(args.queries)]
    index.search(queries[0], k=10)  # warm-up
    times, recalls, exhaustive = [], [], []
    for q in queries:
        start = time.perf_counter()
        hits = index.search(q, k=10)
        times.append(time.perf_counter() - start)
        if n_clips <= 10_000 and len(exhaustive) < 30:
            start = time.perf_counter()
            reference = index.search_exhaustive(q, k=10)
            exhaustive.append(time.perf_counter() - start)
            recalls.append(recall_at_k(hits, reference, k=10))
    p50, p95 = percentiles(times)
    disk = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    frames_bytes = ROWS_PER_CLIP * args.dim * 2
    faiss_bytes = (folder / "faiss-gen.index").stat().st_size
    result = {
        "clips": n_clips, "index_type": index.state["index_type"], "p50": p50, "p95": p95,
        "build_s": build_s, "open_s": open_s, "rss_index_mib": index_mib, "rss_mib": rss_mib(),
        "bytes_per_clip": frames_bytes + faiss_bytes / n_clips + args.dim * 4, "disk_gb": disk / 1e9,
    }
    if exhaustive:
        result["exhaustive_p50"], result["exhaustive_p95"] = percentiles(exhaustive)
        result["recall"] = float(np.mean(recalls))
    print(json.dumps(result), flush=True)
    del index
    for path in folder.iterdir():
        path.unlink()
    return result


def main() -> int:
    """Run (a) when data is given and (b) for every size; print and append the tables."""
    args = parse_args()
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"## Search ({when})", "", f"{args.threads} threads; {platform.machine()}, {os.cpu_count()} CPUs visible.", ""]
    with tempfile.TemporaryDirectory(prefix="acalign-bench-search-") as tmp:
        if args.data is not None:
            if args.model is None:
                raise SystemExit("--data needs --model")
            lines += bench_real(args, Path(tmp))
        results = [bench_size(n, args, Path(tmp)) for n in args.sizes]
    if results:
        lines += [
            "Generated embeddings stand in for clips (10 s, 300-d, stored at 0.2 s); "
            f"above {args.frame_clips:,} clips, perturbed copies share stored frames (see the script's docstring).",
            "",
            "| clips | FAISS | two-stage p50 / p95 ms | exhaustive p50 / p95 ms | recall@10 | bytes/clip | index RSS MiB | open s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results:
            exhaustive = f"{r['exhaustive_p50']:.0f} / {r['exhaustive_p95']:.0f}" if "recall" in r else "-"
            recall = f"{r['recall']:.3f}" if "recall" in r else "-"
            lines.append(
                f"| {r['clips']:,} | {r['index_type']} | {r['p50']:.1f} / {r['p95']:.1f} | {exhaustive} | {recall} "
                f"| {r['bytes_per_clip']:,.0f} | {r['rss_index_mib']:.0f} | {r['open_s']:.1f} |"
            )
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if not args.no_append:
        with open(args.results, "a") as handle:
            handle.write("\n" + table)
    return 0


if __name__ == "__main__":
    if "--threads" in sys.argv:  # BLAS reads its thread count when numpy is first imported
        os.environ["OMP_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
