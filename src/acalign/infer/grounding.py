"""Frame-level outputs for recordings of any length: overlapping windows, stitched.

A recording is cut into windows of ``window`` samples that start every ``hop`` samples
(``window - hop`` is the overlap). Windows are encoded in batches and each one contributes only
its central part: the boundary between two neighbours is the middle of their overlap, so every
kept frame has at least ``overlap / 2`` of context on both sides (except at the recording's own
ends). The last window is aligned to the end of the recording so it too sees a full window of
audio, instead of being a short tail.

Overlapping windows share the costly local part of the encoder (:class:`SharedFrontEnd`,
:func:`iter_shared_frames`): log-mel and the CRNN's convolutions run once over consecutive
stretches of the recording, with enough context at each cut that their rows equal one pass over
the whole file, and only the BiGRU and what follows run per window. With the default 10 s
windows and 2 s overlap that removes the 25 % of convolution work the overlap used to repeat.
(:func:`iter_stitched_frames`, which encodes each window on its own, remains for window hops
that are not a whole number of the CRNN's pooled frames.)

What "the same as whole-file scoring" means
-------------------------------------------
* A recording no longer than one window is encoded as exactly one window holding the whole
  recording: the frames equal whole-file encoding bit for bit (same features, same lengths).
* A longer recording gives the same number of frames at the same times (``1 + n // hop_length``
  frames, frame ``t`` at ``t * hop_length / sample_rate`` s). The convolutions' rows equal the
  whole-file pass (tested); values differ slightly from it only because the bidirectional GRU
  runs per window and so lacks the context beyond the 1 s margin. For an untrained CRNN of the
  paper's shape (32-d output) on a 30 s recording the frame activations differ by at most
  0.006 (measured); the test requires < 0.01, and segments agree.

Memory does not grow with length: the file is streamed block by block
(:func:`acalign.data.audio.iter_audio_blocks`), at most one batch of windows is held, and the
caller receives stitched frames chunk by chunk (:func:`iter_stitched_frames`).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    blocks: Iterable[tuple[int, np.ndarray]], *, plan: WindowPlan, align_frames: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """Turn regular blocks into windows whose last one ends at the recording's end.

    Blocks must be ``plan.window`` long and start every ``plan.hop`` samples, except a shorter
    final block. That short tail is replaced by a window starting at the first frame boundary
    at or after ``n - window``: at most ``hop_length - 1`` samples shorter than a full window.
    With ``align_frames`` > 1 (the hop a multiple of it), the tail starts instead on the last
    multiple of ``align_frames`` frames at or before that boundary: up to ``align_frames - 1``
    frames longer than a full window.

    Yields
    ------
    (start_sample, samples) : tuple[int, np.ndarray (s,)]
        ``start_sample`` is a multiple of ``plan.hop_length * align_frames``.
    """
    if (plan.hop // plan.hop_length) % align_frames:
        raise DataError(
            f"window hop of {plan.hop // plan.hop_length} frames is not a multiple of "
            f"align_frames={align_frames}"
        )
    previous: tuple[int, np.ndarray] | None = None
    for start, block in blocks:
        if block.shape[0] == plan.window or previous is None:
            # a full block, or a recording shorter than one window (one short block)
            yield start, block
            previous = (start, block)
            continue
        prev_start, prev_block = previous
        end = start + block.shape[0]
        tail_frame = math.ceil((end - plan.window) / plan.hop_length)
        tail_start = tail_frame // align_frames * align_frames * plan.hop_length
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


@dataclass(frozen=True)
class SharedFrontEnd:
    """A window encoder split so that overlapping windows share its costly, local part.

    Features and the front end (the CRNN's convolutions) are computed once over consecutive
    stretches of the recording; only the head (the BiGRU and what follows) runs per window.
    The front end's outputs then equal one pass over the whole recording, and each window's
    head sees exactly the frames it would see in that pass instead of frames computed with
    zero padding at the window's own edges.

    Attributes
    ----------
    features : callable, samples (s,) float32 -> features with ``1 + s // hop_length`` rows
        Frame ``t`` is centred on sample ``t * hop_length`` and reads ``feature_margin``
        samples either side (zeros beyond the array, as at a recording's ends).
    front : callable, features (t, ...) -> (t // reduction, ...)
        Row ``j`` depends only on feature rows ``j * reduction`` to ``(j + 1) * reduction - 1``
        and ``context`` rows either side of them.
    head : callable, (list of equal-length front slices (p, ...), frames T) -> (B, T, C)
        The per-window rest of the encoder; ``p = T // reduction``.
    whole : callable, (1, s) -> (1, T, C)
        Encodes a recording no longer than one window in a single pass.
    reduction, context : int
        Feature rows per front row, and rows of context (a multiple of ``reduction``).
    feature_margin : int
        Samples a feature frame reads on either side of its centre.
    """

    features: Callable[[np.ndarray], Any]
    front: Callable[[Any], Any]
    head: Callable[[list[Any], int], np.ndarray]
    whole: WindowEncoder
    reduction: int
    context: int
    feature_margin: int


def iter_shared_frames(
    windows: Iterable[tuple[int, np.ndarray]],
    *,
    encoder: SharedFrontEnd,
    plan: WindowPlan,
    batch_size: int = 16,
) -> Iterator[np.ndarray]:
    """:func:`iter_stitched_frames` with the front end shared by overlapping windows.

    ``windows`` come from :func:`end_aligned_windows` with ``align_frames=encoder.reduction``.
    Windows are taken ``batch_size`` at a time; the batch's stretch of audio, plus context on
    both sides, goes through ``features`` and ``front`` once, and each window's slice of the
    front rows through ``head``. One window of look-ahead supplies the context after a batch;
    memory stays independent of the recording's length.
    """
    stitcher = _Stitcher(plan.hop_length)
    samples = _SampleBuffer()
    pending: deque[tuple[int, int]] = deque()
    source = iter(windows)
    ended = started = False
    while not ended or pending:
        while not ended and (
            len(pending) <= batch_size
            or samples.end < _spans(list(pending)[:batch_size], encoder, plan, None)[3]
        ):
            window = next(source, None)
            if window is None:
                ended = True
                break
            samples.add(*window)
            pending.append((window[0], window[1].shape[0]))
        if not pending:
            break
        if not started and ended and len(pending) == 1:  # no longer than one window: one pass
            start, length = pending.popleft()
            yield from stitcher.add(start, length, encoder.whole(samples.read(0, length)[None])[0])
            break
        started = True
        batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
        total = samples.end if ended else None
        for (start, length), frames in zip(
            batch, _encode_shared(batch, samples, encoder, plan, total), strict=True
        ):
            yield from stitcher.add(start, length, frames)
        if pending:
            samples.drop_before(_spans([pending[0]], encoder, plan, total)[2])
    yield from stitcher.finish()


def _spans(
    batch: Sequence[tuple[int, int]], encoder: SharedFrontEnd, plan: WindowPlan, total: int | None
) -> tuple[int, int, int, int]:
    """``(lo, hi, a, b)``: feature rows ``[lo, hi)`` the front end needs for ``batch`` (its
    windows plus context), and samples ``[a, b)`` whose features cover them exactly (``a`` on a
    frame)."""
    hop = plan.hop_length
    last_start, last_length = batch[-1]
    last_rows = (1 + last_length // hop) // encoder.reduction * encoder.reduction
    lo = max(0, batch[0][0] // hop - encoder.context)
    hi = last_start // hop + last_rows + encoder.context
    if total is not None:
        hi = min(hi, 1 + total // hop)
    margin = -(-encoder.feature_margin // hop)
    a = max(0, (lo - margin) * hop)
    b = (hi - 1 + margin) * hop + 1
    return lo, hi, a, b if total is None else min(b, total)


def _encode_shared(
    batch: list[tuple[int, int]],
    samples: _SampleBuffer,
    encoder: SharedFrontEnd,
    plan: WindowPlan,
    total: int | None,
) -> list[np.ndarray]:
    """Per-window outputs of ``batch`` (consecutive windows), the front end run once."""
    hop = plan.hop_length
    lo, hi, a, b = _spans(batch, encoder, plan, total)
    features = encoder.features(samples.read(a, b))
    front = encoder.front(features[lo - a // hop : hi - a // hop])
    first_row = lo // encoder.reduction
    outputs: list[np.ndarray | None] = [None] * len(batch)
    by_frames: dict[int, list[int]] = {}
    for i, (_, length) in enumerate(batch):
        by_frames.setdefault(1 + length // hop, []).append(i)
    for frames, indices in by_frames.items():
        rows = frames // encoder.reduction
        pieces = []
        for i in indices:
            offset = batch[i][0] // hop // encoder.reduction - first_row
            pieces.append(front[offset : offset + rows])
        encoded = encoder.head(pieces, frames)
        for row, i in enumerate(indices):
            outputs[i] = encoded[row]
    return outputs  # type: ignore[return-value]


class _SampleBuffer:
    """The samples of overlapping windows as one stream; older samples are dropped on request.

    Windows are kept as their new parts only (a list, so adding one copies nothing old).
    """

    def __init__(self) -> None:
        self.pieces: deque[tuple[int, np.ndarray]] = deque()  # (first sample, samples)
        self.end = 0  # one past the last sample held

    def add(self, start: int, window: np.ndarray) -> None:
        """Append what ``window`` (starting at sample ``start``) adds beyond :attr:`end`."""
        if start > self.end:
            raise DataError(f"windows leave a gap: samples {self.end}..{start} are missing")
        new = window[self.end - start :]
        if new.shape[0]:
            self.pieces.append((self.end, new))
            self.end += new.shape[0]

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, min(b, end))`` as one float32 array."""
        parts = [
            piece[max(0, a - first) : max(0, b - first)]
            for first, piece in self.pieces
            if first < b and first + piece.shape[0] > a
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def drop_before(self, a: int) -> None:
        """Forget pieces that end at or before sample ``a``."""
        while self.pieces and self.pieces[0][0] + self.pieces[0][1].shape[0] <= a:
            self.pieces.popleft()


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
        # A copy, not a view: callers keep the pieces of a whole recording, and views would
        # pin each batch's buffer in the heap between later, larger temporaries (measured:
        # RSS grew by ~2 MB per minute of audio that way, all of it free-but-fragmented heap).
        piece = np.array(frames[self.next_frame - first : cut - first])
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
