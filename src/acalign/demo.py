"""The ``make demo`` pipeline: corpus → features → three trainings → evaluation → report.

Every stage is skipped when its output already exists, so re-running reuses what is built and
an interrupted demo continues where it stopped. Stage timings go to ``OUT/timings.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from acalign.config import MAX_SEED, atomic_write_json, ensure_directory, require_directory_path
from acalign.errors import AcalignError

RUNS = ("default", "paper", "supervised")


def _timed(name: str, timings: dict[str, float], func: Callable[[], Any]) -> Any:
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    result = func()
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"=== {name}: {timings[name]:.1f} s", flush=True)
    return result


def build_corpus_stage(corpus_dir: Path, *, size: str, seed: int, cache: Path | None) -> None:
    """Build the embedded corpus unless its manifests already exist."""
    if all((corpus_dir / f"{s}.json").is_file() for s in ("train", "val", "test")):
        print(f"corpus exists at {corpus_dir}, reusing it")
        return
    from acalign.data.corpus.build import build_config, build_corpus
    from acalign.data.corpus.sources import default_cache_dir

    build_corpus(build_config(size=size, seed=seed), corpus_dir, cache=cache or default_cache_dir())


def features_stage(corpus_dir: Path) -> None:
    """Extract log-mel features for every split (resumable; skips finished splits)."""
    from acalign.data.features import FeatureConfig, extract_features

    extract_features(corpus_dir, config=FeatureConfig())


def train_stage(
    name: str, corpus_dir: Path, run_dir: Path, *, seed: int, max_minutes: float | None
) -> None:
    """Train one configuration unless its exported model exists; resume an interrupted run."""
    if (run_dir / "model" / "acalign.json").is_file():
        print(f"{name}: trained model exists at {run_dir}/model, reusing it")
        return
    from acalign.train import resolve_config, train

    config = resolve_config(name, seed=seed, max_minutes=max_minutes)
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    train(config, corpus_dir, run_dir, resume=resume)


def evaluate_stage(run_dir: Path, corpus_dir: Path) -> dict[str, Any]:
    """Evaluate a trained run on the test split (threshold chosen on val)."""
    from acalign.evaluate import evaluate_run

    return evaluate_run(run_dir, corpus_dir, split="test", val_split="val")


def run_demo(
    out: Path,
    *,
    size: str = "default",
    seed: int = 0,
    cache: Path | None = None,
    runs: Sequence[str] = RUNS,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; return the per-run metrics.

    Raises:
        AcalignError: a bad option (checked before any work) or an ``out`` that cannot be made.
    """
    check_options(out, size=size, seed=seed, cache=cache, runs=runs, max_minutes=max_minutes)
    ensure_directory(out)
    corpus_dir = out / "corpus"
    timings: dict[str, float] = {}
    _timed("corpus", timings, lambda: build_corpus_stage(corpus_dir, size=size, seed=seed, cache=cache))
    _timed("features", timings, lambda: features_stage(corpus_dir))
    results: dict[str, Any] = {}
    for name in runs:
        run_dir = out / name
        _timed(f"train {name}", timings, lambda n=name, r=run_dir: train_stage(n, corpus_dir, r, seed=seed, max_minutes=max_minutes))
        results[name] = _timed(f"evaluate {name}", timings, lambda r=run_dir: evaluate_stage(r, corpus_dir))
    from acalign.evaluate import write_comparison_report

    _timed(
        "report",
        timings,
        lambda: write_comparison_report({n: out / n for n in runs}, out / "report.md"),
    )
    timings["total"] = round(sum(timings.values()), 1)
    atomic_write_json(out / "timings.json", timings)
    print_summary(results, timings, out)
    return results


def check_options(
    out: Path,
    *,
    size: str,
    seed: int,
    cache: Path | None,
    runs: Sequence[str],
    max_minutes: float | None,
) -> None:
    """Raise :class:`AcalignError` naming the first demo option that makes no sense."""
    from acalign.data.corpus.build import SIZES

    if size not in SIZES:
        raise AcalignError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    if not 0 <= seed <= MAX_SEED:
        raise AcalignError(f"--seed must be in [0, {MAX_SEED}], got {seed}")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise AcalignError(f"--max-minutes must be a positive number of minutes, got {max_minutes}")
    unknown = [name for name in runs if name not in RUNS]
    if unknown or not runs:
        raise AcalignError(f"--runs must be some of {', '.join(RUNS)}, got {', '.join(runs) or 'none'}")
    for path in (out, cache):
        if path is not None:
            require_directory_path(path)


def print_summary(results: dict[str, Any], timings: dict[str, float], out: Path) -> None:
    """Print the headline table and where the report is."""
    print("\n" + (out / "report.md").read_text() if (out / "report.md").is_file() else "")
    print("stage timings (s): " + json.dumps(timings))
    print(f"\nReport: {out / 'report.md'}  plots: {out}/<run>/plots/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (shared by ``acalign demo``)."""
    from acalign.data.corpus.build import SIZES

    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    sizes = ", ".join(f"{k}={'/'.join(map(str, v))}" for k, v in SIZES.items())
    parser.add_argument(
        "--size", default="default", choices=list(SIZES),
        help=f"corpus size preset, clips per split train/val/test: {sizes} (default: default)",
    )
    parser.add_argument("--seed", type=int, default=0, help=f"seed for corpus and training, 0 to {MAX_SEED} (default: 0)")
    parser.add_argument("--cache", type=Path, default=None, help="package cache (default: ~/.cache/acalign)")
    parser.add_argument(
        "--runs", nargs="+", default=list(RUNS), choices=RUNS, help="configurations to train (default: all)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None,
        help="time budget per training run in minutes, > 0 (default: from the config)",
    )
