"""Frame activations → time: frame boundaries, median filtering, thresholding into segments.

Shared by evaluation (:mod:`acalign.metrics`) and grounding (:mod:`acalign.infer.grounding`) so
that a threshold chosen on validation means the same thing everywhere.

Time convention (see docs/ARCHITECTURE.md, feature store): frames are centred, frame ``t`` sits at
``t / frame_rate`` seconds. Frame ``t`` therefore covers ``[(t - 0.5) / frame_rate,
(t + 0.5) / frame_rate)``, with the first frame's left half cut at 0 s. A frame is *active* when
its (median-filtered) activation is strictly greater than the threshold — the convention of
``sed_scores_eval``, whose threshold sweeps we use to choose the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import median_filter as _scipy_median_filter

from acalign.errors import AcalignError


def frame_boundaries(*, n_frames: int, frame_rate: float) -> np.ndarray:
    """Return the ``n_frames + 1`` boundaries (seconds) of centred frames.

    ``boundaries[t]`` and ``boundaries[t + 1]`` are frame ``t``'s onset and offset:
    ``[0, 0.5 / fr, 1.5 / fr, ..., (n_frames - 0.5) / fr]``, shape ``(n_frames + 1,)``.

    Example: ``frame_boundaries(n_frames=3, frame_rate=50.0)`` → ``[0.0, 0.01, 0.03, 0.05]``.
    """
    _check_positive_frame_rate(frame_rate)
    if n_frames < 1:
        raise AcalignError(f"n_frames must be at least 1, got {n_frames}")
    inner = (np.arange(n_frames, dtype=np.float64) + 0.5) / frame_rate
    return np.concatenate(([0.0], inner))


def median_filter(activation: np.ndarray, *, filter_frames: int) -> np.ndarray:
    """Median-filter a 1-D activation over ``filter_frames`` frames (edges repeat the end value).

    Args:
        activation: shape ``(T,)``.
        filter_frames: window length in frames; 1 leaves the activation unchanged. Must be odd so
            the filter stays centred on each frame.

    Returns:
        float64 array, shape ``(T,)``.
    """
    if int(filter_frames) != filter_frames or filter_frames < 1 or filter_frames % 2 == 0:
        raise AcalignError(f"median filter length must be an odd number of frames >= 1, got {filter_frames}")
    activation = _as_activation(activation)
    if filter_frames == 1:
        return activation.copy()
    return _scipy_median_filter(activation, size=int(filter_frames), mode="nearest")


def activation_to_segments(
    activation: np.ndarray,
    *,
    frame_rate: float,
    threshold: float,
    median_filter_frames: int = 1,
) -> list[tuple[float, float]]:
    """Turn a frame activation into ``(onset, offset)`` segments in seconds.

    The activation is median-filtered, then each maximal run of frames whose value is strictly
    greater than ``threshold`` becomes one segment spanning those frames' boundaries
    (:func:`frame_boundaries`).

    Args:
        activation: shape ``(T,)``, one score per frame.
        frame_rate: frames per second (50 for the default features).
        threshold: decision threshold on the (filtered) activation.
        median_filter_frames: odd median filter length in frames; 1 = no filtering.

    Returns:
        Segments sorted by onset, non-overlapping and non-touching.

    Example: with ``frame_rate=50``, an activation ``[0, 1, 1, 0]`` and ``threshold=0.5`` gives
    ``[(0.01, 0.05)]``.
    """
    filtered = median_filter(activation, filter_frames=median_filter_frames)
    boundaries = frame_boundaries(n_frames=len(filtered), frame_rate=frame_rate)
    onsets, offsets = active_runs(filtered > threshold)
    return [(float(boundaries[i]), float(boundaries[j])) for i, j in zip(onsets, offsets, strict=True)]


def active_runs(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return start indices and (exclusive) end indices of the runs of ``True`` in ``active`` (T,)."""
    padded = np.concatenate(([False], np.asarray(active, dtype=bool), [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return changes[0::2], changes[1::2]


def segments_to_frame_labels(
    segments: Sequence[tuple[float, float]], *, n_frames: int, frame_rate: float
) -> np.ndarray:
    """Frame-level labels: frame ``t`` is positive when its centre ``t / frame_rate`` lies in a
    segment ``[onset, offset]``.

    The rule (closed interval, 1e-6 frame tolerance for boundaries on a frame centre) is the one
    training targets use (``acalign.data.dataset.segment_frames``), so the supervised bound is
    scored against the labels it was trained on.

    Returns:
        bool array, shape ``(n_frames,)``.
    """
    _check_positive_frame_rate(frame_rate)
    labels = np.zeros(n_frames, dtype=bool)
    for onset, offset in segments:
        first = max(math.ceil(onset * frame_rate - 1e-6), 0)
        stop = min(math.floor(offset * frame_rate + 1e-6) + 1, n_frames)
        if stop > first:
            labels[first:stop] = True
    return labels


def merge_segments(
    segments: Sequence[tuple[float, float]], *, end: float | None = None
) -> list[tuple[float, float]]:
    """Sort segments, clip them to ``[0, end]`` and merge those that overlap or touch.

    ``sed_scores_eval`` rejects overlapping or touching events of one class in a file, and
    annotators do produce them; merging keeps the covered time identical. Segments that are
    empty after clipping are dropped.
    """
    clipped = []
    for onset, offset in sorted(segments):
        onset, offset = max(0.0, float(onset)), float(offset)
        if end is not None:
            offset = min(offset, end)
        if offset > onset:
            clipped.append((onset, offset))
    merged: list[tuple[float, float]] = []
    for onset, offset in clipped:
        if merged and onset <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], offset))
        else:
            merged.append((onset, offset))
    return merged


def _as_activation(activation: np.ndarray) -> np.ndarray:
    activation = np.asarray(activation, dtype=np.float64)
    if activation.ndim != 1 or activation.size == 0:
        raise AcalignError(f"activation must be a non-empty 1-D array (T,), got shape {activation.shape}")
    return activation


def _check_positive_frame_rate(frame_rate: float) -> None:
    if not frame_rate > 0:
        raise AcalignError(f"frame_rate must be positive, got {frame_rate}")
