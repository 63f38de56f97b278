"""Run every benchmark in turn (``make bench``); each prints its table and appends to results.md.

Benchmarks time our code and the straightforward reference approach in the same run on the
same data. They are measurements, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_features.py", "bench_train.py", "bench_grounding.py", "bench_search.py", "bench_scaling.py")
GPU_BENCHMARKS = ("bench_gpu.py",)  # run only where PyTorch sees a CUDA device


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device (checked in a child, so this process stays light)."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def main() -> int:
    """Run each benchmark script present; return non-zero if any failed."""
    failed = []
    names = BENCHMARKS + (GPU_BENCHMARKS if cuda_available() else ())
    for name in names:
        script = HERE / name
        if not script.is_file():
            print(f"skipping {name}: not present")
            continue
        print(f"\n##### {name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
