"""Frame-level outputs for recordings of any length: overlapping windows, stitched.

A recording is cut into windows of ``window`` samples that start every ``hop`` samples
(``window - hop`` is the overlap). Windows are encoded in batches and each one contributes only
its central part: the boundary between two neighbours is the middle of their overlap, so every
kept frame has at least ``overlap / 2`` of context on both sides (except at the recording's own
ends). The last window is aligned to the end of the recording so it too sees a full window of
audio, instead of being a short tail.

What "the same as whole-file scoring" means
-------------------------------------------
* A recording no longer than one window is encoded as exactly one window holding the whole
  recording: the frames equal whole-file encoding bit for bit (same features, same lengths).
* A longer recording gives the same number of frames at the same times (``1 + n // hop_length``
  frames, frame ``t`` at ``t * hop_length / sample_rate`` s). Values differ slightly from one
  whole-file pass, because the CRNN's convolutions see a few frames across the cut and its
  bidirectional GRU carries state over the whole sequence. With the central-part rule the
  convolution's receptive field (about ±0.3 s for the paper's CRNN) is always inside the
  window, so what differs is only the GRU's context beyond the 1 s margin. For an untrained
  paper-size CRNN on a 30 s recording the frame activations differ by at most 0.0023
  (measured); the test requires < 0.01, and segments agree.

Memory does not grow with length: the file is streamed block by block
(:func:`acalign.data.audio.iter_audio_blocks`), at most one batch of windows is held, and the
caller receives stitched frames chunk by chunk (:func:`iter_stitched_frames`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acalign.errors import DataError

#: Encodes a batch of equal-length windows ``(B, S)`` into per-frame outputs ``(B, T, C)``.
WindowEncoder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class WindowPlan:
    """Window geometry in samples at the model's sample rate.

    ``window`` and ``hop`` are multiples of ``hop_length`` so that every window starts on a
    frame of the whole recording.
    """

    window: int
    hop: int
    hop_length: int

    @classmethod
    def from_seconds(
        cls,
        *,
        window_seconds: float,
        overlap_seconds: float,
        sample_rate: int,
        hop_length: int,
    ) -> WindowPlan:
        """Round ``window_seconds`` and the hop (``window - overlap``) to whole feature frames."""
        if window_seconds <= 0:
            raise DataError(f"window_seconds must be positive, got {window_seconds}")
        if not 0 <= overlap_seconds < window_seconds:
            raise DataError(
                f"overlap_seconds must be in [0, window_seconds), got {overlap_seconds}"
            )
        frames_per_window = max(1, round(window_seconds * sample_rate / hop_length))
        hop_frames = max(1, round((window_seconds - overlap_seconds) * sample_rate / hop_length))
        hop_frames = min(hop_frames, frames_per_window)
        return cls(
            window=frames_per_window * hop_length,
            hop=hop_frames * hop_length,
            hop_length=hop_length,
        )

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT over ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length


def file_blocks(
    path: str | os.PathLike, *, plan: WindowPlan, sample_rate: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream ``path`` as ``(start_sample, samples)`` blocks of ``plan.window`` every ``plan.hop``."""
    from acalign.data.audio import iter_audio_blocks

    return iter_audio_blocks(
        path,
        sample_rate=sample_rate,
        block_seconds=plan.window / sample_rate,
        overlap_seconds=(plan.window - plan.hop) / sample_rate,
    )


def array_blocks(waveform: np.ndarray, *, plan: WindowPlan) -> Iterator[tuple[int, np.ndarray]]:
    """Cut an in-memory mono waveform ``(n,)`` the way :func:`file_blocks` cuts a file."""
    n = waveform.shape[0]
    if n == 0:
        raise DataError("<array>: audio is empty (0 samples)")
    start = 0
    while True:
        yield start, waveform[start : start + plan.window]
        if start + plan.window >= n:
            return
        start += plan.hop


def end_aligned_windows(
    blocks: Iterable[tuple[int, np.ndarray]], *, plan: WindowPlan
) -> Iterator[tuple[int, np.ndarray]]:
    """Turn regular blocks into windows whose last one ends at the recording's end.

    Blocks must be ``plan.window`` long and start every ``plan.hop`` samples, except a shorter
    final block. That short tail is replaced by a window starting at the first frame boundary
    at or after ``n - window``: at most ``hop_length - 1`` samples shorter than a full window.

    Yields
    ------
    (start_sample, samples) : tuple[int, np.ndarray (s,)]
        ``start_sample`` is a multiple of ``plan.hop_length``.
    """
    previous: tuple[int, np.ndarray] | None = None
    for start, block in blocks:
        if block.shape[0] == plan.window or previous is None:
            # a full block, or a recording shorter than one window (one short block)
            yield start, block
            previous = (start, block)
            continue
        prev_start, prev_block = previous
        end = start + block.shape[0]
        tail_start = math.ceil((end - plan.window) / plan.hop_length) * plan.hop_length
        joined = np.concatenate([prev_block, block[prev_start + plan.window - start :]])
        yield tail_start, joined[tail_start - prev_start :]
        return


def iter_stitched_frames(
    windows: Iterable[tuple[int, np.ndarray]],
    *,
    encode: WindowEncoder,
    plan: WindowPlan,
    batch_size: int = 16,
) -> Iterator[np.ndarray]:
    """Encode windows in batches and yield the stitched per-frame outputs in time order.

    Parameters
    ----------
    windows : iterable of (start_sample, samples (s,))
        From :func:`end_aligned_windows`, in increasing ``start_sample``.
    encode : callable, (B, S) float32 -> (B, T, C)
        Encodes equal-length windows; ``T = 1 + S // hop_length``.
    plan : WindowPlan
    batch_size : int
        Windows encoded per call.

    Yields
    ------
    np.ndarray, shape=(t, C)
        Consecutive frames; concatenated they hold ``1 + n // hop_length`` frames.
    """
    stitcher = _Stitcher(plan.hop_length)
    batch: list[tuple[int, np.ndarray]] = []
    for start, samples in windows:
        batch.append((start, samples))
        if len(batch) >= batch_size:
            yield from _encode_and_stitch(batch, encode, stitcher)
            batch = []
    if batch:
        yield from _encode_and_stitch(batch, encode, stitcher)
    yield from stitcher.finish()


def _encode_and_stitch(
    batch: list[tuple[int, np.ndarray]], encode: WindowEncoder, stitcher: _Stitcher
) -> Iterator[np.ndarray]:
    """Encode a batch (grouped by length: only the last window can be shorter) and stitch it."""
    outputs: list[np.ndarray | None] = [None] * len(batch)
    by_length: dict[int, list[int]] = {}
    for i, (_, samples) in enumerate(batch):
        by_length.setdefault(samples.shape[0], []).append(i)
    for indices in by_length.values():
        encoded = encode(np.stack([batch[i][1] for i in indices]))
        for row, i in enumerate(indices):
            outputs[i] = encoded[row]
    for (start, samples), out in zip(batch, outputs, strict=True):
        yield from stitcher.add(start, samples.shape[0], out)


class _Stitcher:
    """Keeps the central part of each window: cuts fall in the middle of each overlap."""

    def __init__(self, hop_length: int) -> None:
        self.hop_length = hop_length
        self.pending: tuple[int, int, np.ndarray] | None = None  # start, end, frames
        self.next_frame = 0  # first global frame not yet emitted

    def add(self, start: int, length: int, frames: np.ndarray) -> Iterator[np.ndarray]:
        if self.pending is not None:
            prev_start, prev_end, prev_frames = self.pending
            cut = round((start + prev_end) / 2 / self.hop_length)
            yield self._take(prev_start, prev_frames, cut)
        self.pending = (start, start + length, frames)

    def finish(self) -> Iterator[np.ndarray]:
        if self.pending is not None:
            start, _, frames = self.pending
            yield self._take(start, frames, start // self.hop_length + frames.shape[0])
            self.pending = None

    def _take(self, start: int, frames: np.ndarray, cut: int) -> np.ndarray:
        first = start // self.hop_length
        piece = frames[self.next_frame - first : cut - first]
        self.next_frame = cut
        return piece


def activation_segments(
    activation: np.ndarray,
    *,
    frame_rate: float,
    threshold: float,
    median_filter_frames: int = 1,
) -> list[tuple[float, float, float]]:
    """Events of one activation ``(T,)`` as ``(onset, offset, score)`` in seconds.

    Same rule as :func:`acalign.postprocess.activation_to_segments` (median filter, then runs
    of frames strictly above ``threshold``); ``score`` is the peak filtered activation of each.
    """
    from acalign.postprocess import active_runs, frame_boundaries, median_filter

    filtered = median_filter(activation, filter_frames=median_filter_frames)
    bounds = frame_boundaries(n_frames=filtered.shape[0], frame_rate=frame_rate)
    onsets, offsets = active_runs(filtered > threshold)
    return [
        (float(bounds[i]), float(bounds[j]), float(filtered[i:j].max()))
        for i, j in zip(onsets, offsets, strict=True)
    ]


def median_filter_frames(median_filter_seconds: float | None, *, frame_rate: float) -> int:
    """Median filter length in frames (odd, at least 1) for a length in seconds."""
    if median_filter_seconds is None or median_filter_seconds <= 0:
        return 1
    frames = max(1, round(median_filter_seconds * frame_rate))
    return frames if frames % 2 else frames + 1


def downsample_max(values: np.ndarray, *, max_points: int) -> tuple[np.ndarray, int]:
    """Pool ``values (T, ...)`` by max over blocks so at most ``max_points`` rows remain.

    Returns the pooled array and the block length (1 when no pooling was needed). Max keeps
    short peaks visible in an overview plot of a long recording.
    """
    n = values.shape[0]
    factor = max(1, math.ceil(n / max_points))
    if factor == 1:
        return values, 1
    usable = (n // factor) * factor
    pooled = values[:usable].reshape(n // factor, factor, *values.shape[1:]).max(axis=1)
    if usable < n:
        pooled = np.concatenate([pooled, values[usable:].max(axis=0, keepdims=True)])
    return pooled, factor


def overview_log_mel(
    audio: str | os.PathLike | np.ndarray,
    *,
    feature_config: object,
    max_columns: int = 2000,
    sample_rate: int | None = None,
) -> tuple[np.ndarray, float]:
    """Log-mel of a whole recording for display, mean-pooled to at most ``max_columns`` frames.

    A file is streamed in 60 s blocks, so an hour needs no more memory than a minute.

    Returns
    -------
    spectrogram : np.ndarray, shape=(T', n_mels), float32
    columns_per_second : float
    """
    from acalign.data.audio import audio_duration, load_audio
    from acalign.data.features import log_mel

    rate = int(feature_config.sample_rate)
    frame_rate = float(feature_config.frame_rate)
    if isinstance(audio, np.ndarray):
        waveform = load_audio(audio, sample_rate=rate, source_rate=sample_rate)
        duration = waveform.shape[0] / rate
        blocks: Iterable[tuple[int, np.ndarray]] = [(0, waveform)]
    else:
        from acalign.data.audio import iter_audio_blocks

        duration = audio_duration(audio)
        blocks = iter_audio_blocks(audio, sample_rate=rate, block_seconds=60.0)
    factor = max(1, math.ceil(duration * frame_rate / max_columns))
    pooled: list[np.ndarray] = []
    carry = np.zeros((0, int(feature_config.n_mels)), dtype=np.float32)
    for _, block in blocks:
        frames = np.concatenate([carry, log_mel(block, feature_config)[:-1]])
        usable = (frames.shape[0] // factor) * factor
        pooled.append(frames[:usable].reshape(-1, factor, frames.shape[1]).mean(axis=1))
        carry = frames[usable:]
    if carry.shape[0]:
        pooled.append(carry.mean(axis=0, keepdims=True))
    return np.concatenate(pooled), frame_rate / factor


def plot_grounding(
    results: Sequence[object],
    *,
    spectrogram: np.ndarray,
    columns_per_second: float,
    path: str | os.PathLike,
    threshold: float | None = None,
    title: str = "",
    max_points: int = 4000,
) -> Path:
    """Save a PNG: the log-mel spectrogram, and under it each phrase's activation against seconds
    with its detected segments shaded. Long activations are max-pooled to ``max_points`` points
    (an overview that keeps short peaks visible).

    Parameters
    ----------
    results : sequence of GroundingResult
    spectrogram : np.ndarray, shape=(T', n_mels)
    columns_per_second : float
        Time resolution of ``spectrogram``.
    path : path
        Output PNG (written through a temporary file and a rename).
    """
    from matplotlib.figure import Figure

    from acalign.plots import save_figure

    n = len(results)
    fig = Figure(figsize=(10, 2.4 + 1.2 * n), dpi=110, layout="constrained")
    axes = fig.subplots(
        1 + n, 1, sharex=True, squeeze=False, height_ratios=[2.2] + [1] * n
    )[:, 0]
    duration = spectrogram.shape[0] / columns_per_second
    axes[0].imshow(
        spectrogram.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, duration, 0, spectrogram.shape[1]),
        interpolation="nearest",
    )
    axes[0].set_ylabel("mel band")
    axes[0].set_title(title, fontsize=9, loc="left")
    for ax, result in zip(axes[1:], results, strict=True):
        activation, factor = downsample_max(np.asarray(result.activation), max_points=max_points)
        times = np.asarray(result.times)[::factor][: activation.shape[0]]
        for onset, offset, _ in result.segments:
            ax.axvspan(onset, offset, color="tab:green", alpha=0.3, lw=0)
            axes[0].axvspan(onset, offset, color="tab:green", alpha=0.15, lw=0)
        ax.plot(times, activation, color="tab:blue", lw=1.0)
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", ls="--", lw=1)
        ax.set_ylim(0, max(1.0, float(activation.max())))
        ax.set_ylabel("activation", fontsize=8)
        pooled = f" (max over {factor} frames)" if factor > 1 else ""
        ax.set_title(f"{result.phrase}{pooled}", fontsize=8, loc="left")
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, duration)
    return save_figure(fig, Path(path))


# --------------------------------------------------------------------------- output formats


def grounding_to_dict(
    results: Sequence[object], *, filename: str, duration: float, threshold: float,
    median_filter_seconds: float,
) -> dict[str, object]:
    """A JSON-ready summary: settings, and per phrase its tokens, peak and segments."""
    return {
        "file": filename,
        "duration": round(float(duration), 3),
        "threshold": float(threshold),
        "median_filter_seconds": round(float(median_filter_seconds), 4),
        "phrases": [
            {
                "phrase": r.phrase,
                "tokens": list(r.tokens),
                "max_activation": round(float(np.max(r.activation)), 4),
                "segments": [
                    {"onset": round(on, 3), "offset": round(off, 3), "score": round(sc, 4)}
                    for on, off, sc in r.segments
                ],
            }
            for r in results
        ],
    }


def grounding_to_tsv(results: Sequence[object], *, filename: str) -> str:
    """DCASE-style rows ``filename, onset, offset, event_label, score`` with a header line."""
    lines = ["filename\tonset\toffset\tevent_label\tscore"]
    for r in results:
        label = " ".join(r.phrase.split())  # no tabs or newlines inside a label
        for onset, offset, score in r.segments:
            lines.append(f"{filename}\t{onset:.3f}\t{offset:.3f}\t{label}\t{score:.4f}")
    return "\n".join(lines) + "\n"


def grounding_to_table(
    results: Sequence[object], *, filename: str, duration: float, threshold: float
) -> str:
    """A readable table: one row per segment, phrases in the order given."""
    width = max([6, *(len(r.phrase) for r in results)])
    lines = [
        f"{filename}  ({duration:.2f} s, threshold {threshold:.3g})",
        f"{'phrase':<{width}}  {'onset':>9}  {'offset':>9}  {'score':>6}",
    ]
    for r in results:
        if not r.segments:
            peak = float(np.max(r.activation))
            lines.append(f"{r.phrase:<{width}}  {'-':>9}  {'-':>9}  {'-':>6}  (peak {peak:.3f})")
        for onset, offset, score in r.segments:
            lines.append(f"{r.phrase:<{width}}  {onset:>9.2f}  {offset:>9.2f}  {score:>6.3f}")
    return "\n".join(lines) + "\n"
