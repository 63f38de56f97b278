"""Process-level tuning shared by the heavy commands (feature workers, training, grounding)."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(*, trim_threshold_mb: int = 256) -> None:
    """Raise glibc's mmap and trim thresholds in this process (Linux only; else a no-op).

    Our hot loops allocate and free the same multi-megabyte buffers (decoded audio, STFTs,
    activations) over and over; with glibc's defaults they go through mmap/munmap every time
    and the kernel zeroes fresh pages, which cost the reference implementation about a quarter
    of its CPU time (BASELINES.md). ``mallopt`` does at run time what the
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` variables do at start-up. Memory stays
    bounded: freed buffers are reused rather than returned. Call it from worker processes and
    CLI commands, not from library code that runs inside a user's process.
    """
    _mallopt(mmap_threshold=32 * 1024 * 1024, trim_threshold=trim_threshold_mb * 1024 * 1024)


def limit_malloc_retention(*, mmap_threshold_mb: int = 1) -> None:
    """The opposite trade of :func:`tune_malloc`: give freed buffers back to the OS at once.

    Buffers of ``mmap_threshold_mb`` or more get their own mappings, returned on free, so the
    process's resident memory follows what is live; every large allocation then pays for
    fresh pages again (training measured about a third slower on 2 cores). Linux only; else a
    no-op.
    """
    _mallopt(mmap_threshold=mmap_threshold_mb * 1024 * 1024, trim_threshold=16 * 1024 * 1024)


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX tiles).

    Elsewhere (AVX2-only CPUs, e.g. AMD EPYC before Zen 4) oneDNN emulates bf16 and a bf16
    autocast training step was measured 10× slower than fp32 (1.5 vs 15.6 clips/s).
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _mallopt(*, mmap_threshold: int, trim_threshold: int) -> None:
    """Set glibc's mmap threshold (32 MB at most on 64-bit) and trim threshold, in bytes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
