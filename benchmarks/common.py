"""Shared helpers of the benchmarks: machine description, timers, peak RSS, results.md sections.

Every benchmark measures; none asserts a speed. The machine is often shared, so each helper that
times something returns the median of several runs and the load average is recorded with it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.md"

#: glibc's malloc thresholds raised (set before the process starts: the environment variables
#: are read once at start-up). 32 MiB is glibc's ceiling for the mmap threshold on 64-bit.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_flags() -> str:
    """The vector extensions relevant to torch's CPU kernels (AVX2, AVX-512 families, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags)


def machine() -> str:
    """One line: CPU model, usable cores, vector extensions, memory, Python and torch versions."""
    try:
        mem_kb = int(next(
            line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ))
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "? GiB"
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = "?"
    return (
        f"{cpu_model()}, {usable_cores()} cores ({cpu_flags() or 'no AVX info'}), {memory}, "
        f"Python {platform.python_version()}, torch {torch_version}"
    )


def load_average() -> float:
    """One-minute load average (the machine is shared: read timings against it)."""
    return os.getloadavg()[0]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform.startswith("linux") else peak / 1024 / 1024


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def time_call(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return (median s, all s)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times), times


def median_with_range(values: Sequence[float], fmt: str, *, unit: str = "") -> str:
    """``median{unit} (min–max)`` of the values in ``fmt``; the median alone for one value."""
    text = f"{median(values):{fmt}}{unit}"
    if len(values) > 1:
        text += f" ({min(values):{fmt}}–{max(values):{fmt}})"
    return text


def spread(values: Sequence[float]) -> str:
    """``min–max`` of the values, for the tables (how noisy the median is)."""
    return f"{min(values):.3g}–{max(values):.3g}"


def run_worker(
    script: Path, spec: dict[str, Any], *, env: dict[str, str] | None = None, threads: int = 2,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``script --worker JSON`` in a fresh process and return the JSON of its last stdout line.

    A fresh process gives each measurement its own peak RSS and lets environment variables that
    are only read at start-up (glibc's malloc thresholds, OMP_NUM_THREADS) take effect.
    """
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["OMP_NUM_THREADS"] = str(threads)
    child_env.setdefault("PYTHONWARNINGS", "ignore")
    out = subprocess.run(
        [sys.executable, str(script), "--worker", json.dumps(spec)],
        check=False, capture_output=True, text=True, env=child_env, timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{script.name} worker {spec.get('kind')} failed ({out.returncode}):\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_power_law(sizes: Sequence[float], costs: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log(cost) = a + b log(size)``; return ``(a, b)``."""
    import numpy as np

    b, a = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(costs, float)), 1)
    return float(a), float(b)


def append_section(title: str, body: str, *, results: Path = RESULTS, load: Sequence[float] = ()) -> None:
    """Append ``## title (date; machine)`` + ``body`` to ``results`` (benchmarks/results.md)."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"\n## {title} ({stamp})", "", f"Machine: {machine()}."]
    if load:
        lines.append(
            "Load average (1 min) during the run: " + ", ".join(f"{x:.1f}" for x in load)
            + " (shared machine: medians of repeated runs)."
        )
    with results.open("a") as handle:
        handle.write("\n".join(lines) + "\n\n" + body.rstrip() + "\n")
