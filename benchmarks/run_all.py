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


def main() -> int:
    """Run each benchmark script present; return non-zero if any failed."""
    failed = []
    for name in BENCHMARKS:
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
