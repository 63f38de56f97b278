"""Find the same recording shipped twice: several games copy each other's sound effects.

A copy in two packages (re-encoded, resampled, renamed) would otherwise sit in two recording
families, and so possibly in train and in test. Each prepared recording (decoded, resampled,
trimmed to its audible extent, peak-normalised) gets a binary fingerprint in the manner of
Haitsma & Kalker (2002): the sign of the energy difference between neighbouring bands, differenced
again over time, in 16 bands of ~32 ms frames. Encoders move these bits little; two different
sounds agree on about half of them. Recordings of near-equal length whose fingerprints agree on
at least :data:`MATCH_AGREEMENT` of their bits (best of a few frame shifts) are duplicates.

Written here rather than taken from Chromaprint (Debian's libchromaprint, PyPI pyacoustid): that
is tuned for identifying music tracks of several seconds and brings a C library, while most of
our recordings are effects of a fraction of a second to a few seconds, compared all against all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

FRAME_SECONDS = 0.032
BANDS = 17  # 17 band energies give 16 difference bits per frame
LOW_HZ, HIGH_HZ = 150.0, 6000.0
MAX_FRAMES = 160  # ~5 s: enough to tell recordings apart, bounded cost
MIN_FRAMES = 4
MATCH_AGREEMENT = 0.85
LENGTH_TOLERANCE = 0.04  # relative difference of durations still compared
SHIFTS = (-1, 0, 1)


def fingerprint(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Binary fingerprint of a mono recording.

    Parameters
    ----------
    audio : np.ndarray, shape=(n_samples,)
        The prepared (trimmed, normalised) recording.
    sample_rate : int
        Hz.

    Returns
    -------
    np.ndarray, shape=(frames, 16), dtype=bool
        ``frames`` ≤ :data:`MAX_FRAMES`; empty for recordings shorter than two frames.
    """
    frame = int(round(FRAME_SECONDS * sample_rate))
    n_frames = min(MAX_FRAMES + 1, len(audio) // frame)
    if n_frames < 2:
        return np.zeros((0, BANDS - 1), dtype=bool)
    frames = np.asarray(audio[: n_frames * frame], dtype=np.float32).reshape(n_frames, frame)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(frame).astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    edges = np.geomspace(LOW_HZ, min(HIGH_HZ, sample_rate / 2 * 0.95), BANDS + 1)
    energy = np.stack(
        [spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)],
        axis=1,
    )
    across = np.diff(energy, axis=1)  # (frames, 16)
    return (across[1:] - across[:-1]) > 0


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal bits of two fingerprints at their best relative shift (0 if too short)."""
    best = 0.0
    for shift in SHIFTS:
        x, y = (a[shift:], b) if shift >= 0 else (a, b[-shift:])
        n = min(len(x), len(y))
        if n >= MIN_FRAMES:
            best = max(best, float(np.mean(x[:n] == y[:n])))
    return best


def duplicate_groups(durations: Sequence[float], prints: Sequence[np.ndarray]) -> list[list[int]]:
    """Groups (of two or more indices) of recordings that are copies of each other.

    Parameters
    ----------
    durations : sequence of float
        Seconds of each prepared recording.
    prints : sequence of np.ndarray
        Their :func:`fingerprint`.

    Returns
    -------
    list of list of int
        Each group sorted, groups sorted by their first index; a recording too short to
        fingerprint is never grouped.
    """
    order = np.argsort(np.asarray(durations, dtype=np.float64), kind="stable")
    parent = list(range(len(durations)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pos, i in enumerate(order):
        if len(prints[i]) < MIN_FRAMES:
            continue
        limit = durations[i] * (1 + LENGTH_TOLERANCE) + FRAME_SECONDS
        for j in order[pos + 1 :]:
            if durations[j] > limit:
                break
            if len(prints[j]) >= MIN_FRAMES and find(i) != find(j) and agreement(prints[i], prints[j]) >= MATCH_AGREEMENT:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(durations)):
        groups[find(i)].append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])
