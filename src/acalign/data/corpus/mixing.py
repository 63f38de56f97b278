"""Clip synthesis: decode and trim recordings once, then mix a background and timed events.

Labels are exact because every event is trimmed to its *audible extent* — the frames whose RMS
is within ``threshold_db`` of the event's loudest frame and, over a real ambience, no more than
``-masking_db`` below the ambience's level — before it is placed, and its segment is that
extent's position in the clip, on a whole-millisecond grid. The mixture, if it would clip, is
scaled as a whole, which moves no boundary.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from acalign.data.audio import load_audio

from .sources import Recording

FRAME_SECONDS = 0.005
EXCERPT_FADE_SECONDS = 0.02
PEAK_CEILING = 0.95


@dataclass(frozen=True)
class MixConfig:
    """Signal settings shared by preparation and mixing."""

    sample_rate: int = 32000
    clip_seconds: float = 10.0
    threshold_db: float = -35.0
    masking_db: float = -10.0

    @property
    def clip_samples(self) -> int:
        """Number of samples in a clip."""
        return round(self.sample_rate * self.clip_seconds)


# --------------------------------------------------------------------------- preparation


def frame_rms(audio: np.ndarray, frame: int) -> np.ndarray:
    """RMS of consecutive non-overlapping frames (the last one zero-padded). shape=(n_frames,)"""
    n_frames = max(1, -(-len(audio) // frame))
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[: len(audio)] = audio
    return np.sqrt(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1))


def audible_extent(
    audio: np.ndarray, *, sample_rate: int, threshold_db: float, floor: float = 0.0
) -> tuple[int, int]:
    """Return ``(start, stop)`` samples from the first to the last frame whose RMS is within
    ``threshold_db`` of the loudest frame and at least ``floor`` (an absolute RMS: what a
    background masks). ``(0, 0)`` when no frame qualifies (silence, or fully masked).
    """
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    rms = frame_rms(audio, frame)
    peak = float(rms.max()) if rms.size else 0.0
    if peak <= 1e-9:
        return 0, 0
    loud = np.flatnonzero(rms >= max(peak * 10 ** (threshold_db / 20), floor))
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * frame), int(min(len(audio), (loud[-1] + 1) * frame))


def active_rms(audio: np.ndarray, *, sample_rate: int, threshold_db: float) -> float:
    """RMS over the frames within ``threshold_db`` of the loudest (gaps between steps ignored)."""
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    rms = frame_rms(audio, frame)
    peak = float(rms.max()) if rms.size else 0.0
    if peak <= 1e-9:
        return 0.0
    loud = rms[rms >= peak * 10 ** (threshold_db / 20)]
    return float(np.sqrt(np.mean(loud**2)))


def prepared_path(rec: Recording, cache: Path, sample_rate: int, threshold_db: float) -> Path:
    """Where the decoded, resampled and trimmed copy of ``rec`` is cached."""
    stat = Path(rec.file).stat() if Path(rec.file).is_file() else None
    stamp = f"{stat.st_size}-{stat.st_mtime_ns}" if stat else ""
    key = hashlib.sha1(f"{rec.recording_id}|{rec.version}|{rec.file}|{stamp}|{threshold_db}".encode())
    return cache / "prepared" / f"sr{sample_rate}" / rec.package / f"{key.hexdigest()[:16]}.npy"


def fingerprint_path(prepared: Path) -> Path:
    """Where the duplicate-finding fingerprint of a prepared recording is cached."""
    return prepared.with_suffix(".fp.npy")


def prepare_recording(rec: Recording, cache: Path, config: MixConfig) -> tuple[str, float]:
    """Decode, resample and trim ``rec`` to its audible extent, cached as float16 .npy, with its
    fingerprint (:func:`acalign.data.corpus.dedup.fingerprint`) beside it.

    float16 keeps ~66 dB of precision relative to each sample, far below any mixing level,
    at half the disk of float32. Returns ``(recording_id, duration in seconds)``; 0 for silence.
    """
    from .dedup import fingerprint

    target = prepared_path(rec, cache, config.sample_rate, config.threshold_db)
    prints = fingerprint_path(target)
    if target.is_file():
        trimmed = np.load(target, mmap_mode="r")
        if not prints.is_file():
            _save_npy(prints, fingerprint(np.asarray(trimmed, dtype=np.float32), config.sample_rate))
        return rec.recording_id, len(trimmed) / config.sample_rate
    audio = load_audio(rec.file, sample_rate=config.sample_rate)
    start, stop = audible_extent(audio, sample_rate=config.sample_rate, threshold_db=config.threshold_db)
    trimmed = audio[start:stop]
    peak = float(np.abs(trimmed).max()) if trimmed.size else 0.0
    if peak > 0:
        trimmed = trimmed / peak  # peak-normalised: float16 then keeps its precision
    _save_npy(prints, fingerprint(trimmed, config.sample_rate))
    _save_npy(target, trimmed.astype(np.float16))
    return rec.recording_id, len(trimmed) / config.sample_rate


def _save_npy(target: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and a rename (never a half-written array)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, target)


def load_fingerprint(rec: Recording, cache: Path, config: MixConfig) -> np.ndarray:
    """The cached fingerprint of a prepared recording, ``shape=(frames, 16)`` bool."""
    return np.load(fingerprint_path(prepared_path(rec, cache, config.sample_rate, config.threshold_db)))


@lru_cache(maxsize=256)
def _load_prepared(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- plans


@dataclass
class Piece:
    """A stretch ``[start, start+length)`` of a prepared recording, at ``offset`` in its event."""

    recording: str
    start: int
    length: int
    offset: int
    fade: bool = False


@dataclass
class EventPlan:
    """One foreground event: its pieces, where it goes and how loud.

    ``position`` in [0, 1) places the event within the free room of the clip, or, when
    ``overlap`` names an earlier event of the plan, within that event's span (so the two sound
    at once).
    """

    label: str
    pieces: list[Piece]
    position: float
    snr_db: float
    distant: bool = False
    overlap: int | None = None


@dataclass
class BackgroundPlan:
    """The clip's bed: a real ambience (looped when short) or low noise."""

    label: str | None
    recording: str | None
    start: int = 0
    level_db: float = -30.0


@dataclass
class ClipPlan:
    """Everything needed to render one clip deterministically."""

    audio_id: str
    split: str
    seed: int
    background: BackgroundPlan
    events: list[EventPlan] = field(default_factory=list)


@dataclass
class PlacedEvent:
    """An event as mixed: class, exact segment (seconds), level and the recordings used."""

    label: str
    onset: float
    offset: float
    snr_db: float
    distant: bool
    recordings: list[str]


# --------------------------------------------------------------------------- rendering


def render_clip(
    plan: ClipPlan, prepared: dict[str, str], config: MixConfig
) -> tuple[np.ndarray, list[PlacedEvent]]:
    """Mix ``plan`` into a clip; return (audio shape=(clip_samples,), placed events).

    ``prepared`` maps recording id → prepared .npy path.
    """
    n = config.clip_samples
    rng = np.random.default_rng(plan.seed)
    reference = 10 ** (plan.background.level_db / 20)
    mix = _background(plan.background, prepared, config, rng, reference)
    # Parts of an event more than masking_db below a real background are not heard: not labelled.
    floor = reference * 10 ** (config.masking_db / 20) if plan.background.recording else 0.0
    placed: list[PlacedEvent] = []
    spans: list[tuple[int, int] | None] = []  # (onset_ms, offset_ms) of each planned event
    for event in plan.events:
        signal = _assemble(event.pieces, prepared, config)
        start, stop = audible_extent(signal, sample_rate=config.sample_rate, threshold_db=config.threshold_db)
        signal = signal[start:stop]
        level = active_rms(signal, sample_rate=config.sample_rate, threshold_db=config.threshold_db)
        gain = reference * 10 ** (event.snr_db / 20) / max(level, 1e-9)
        signal = gain * signal
        start, stop = audible_extent(
            signal, sample_rate=config.sample_rate, threshold_db=config.threshold_db, floor=floor
        )
        if stop <= start:  # masked by the background throughout: not heard, so neither mixed nor labelled
            spans.append(None)
            continue
        # Onset and length on the millisecond grid, so the manifest's times are exact samples.
        length_ms = min(stop - start, n) * 1000 // config.sample_rate
        signal = signal[start : start + _ms_to_samples(length_ms, config.sample_rate)]
        if length_ms == 0:
            spans.append(None)
            continue
        clip_ms = round(config.clip_seconds * 1000)
        anchor = spans[event.overlap] if event.overlap is not None and event.overlap < len(spans) else None
        if anchor is not None:
            onset_ms = min(anchor[0] + int(event.position * (anchor[1] - anchor[0])), clip_ms - length_ms)
        else:
            onset_ms = int(event.position * (clip_ms - length_ms))
        spans.append((onset_ms, onset_ms + length_ms))
        onset = _ms_to_samples(onset_ms, config.sample_rate)
        signal = signal[: n - onset]  # a rounding sample at rates that are not whole per ms
        mix[onset : onset + len(signal)] += signal
        placed.append(
            PlacedEvent(
                label=event.label,
                onset=onset_ms / 1000,
                offset=(onset_ms + length_ms) / 1000,
                snr_db=round(event.snr_db, 1),
                distant=event.distant,
                recordings=sorted({p.recording for p in event.pieces}),
            )
        )
    peak = float(np.abs(mix).max())
    if peak > PEAK_CEILING:
        mix *= PEAK_CEILING / peak
    return mix.astype(np.float32), placed


def _ms_to_samples(ms: int, sample_rate: int) -> int:
    return round(ms * sample_rate / 1000)


def _assemble(pieces: Sequence[Piece], prepared: dict[str, str], config: MixConfig) -> np.ndarray:
    length = max(p.offset + p.length for p in pieces)
    signal = np.zeros(length, dtype=np.float32)
    fade = round(EXCERPT_FADE_SECONDS * config.sample_rate)
    for piece in pieces:
        source = _load_prepared(prepared[piece.recording])
        chunk = np.asarray(source[piece.start : piece.start + piece.length], dtype=np.float32)
        if piece.fade and len(chunk) > 2 * fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            chunk = chunk.copy()
            chunk[:fade] *= ramp
            chunk[-fade:] *= ramp[::-1]
        signal[piece.offset : piece.offset + len(chunk)] += chunk
    return signal


def _background(
    plan: BackgroundPlan, prepared: dict[str, str], config: MixConfig, rng: np.random.Generator, reference: float
) -> np.ndarray:
    """The clip's bed at ``reference`` RMS (real ambience) or 40 dB below it (noise)."""
    n = config.clip_samples
    if plan.recording is None:
        # Brown-ish noise (integrated white noise, high-passed by the mean removal): a quiet room.
        noise = np.cumsum(rng.standard_normal(n + 1)).astype(np.float64)
        noise = np.diff(noise - np.linspace(noise[0], noise[-1], n + 1)) + 0.3 * rng.standard_normal(n)
        return (noise / np.sqrt(np.mean(noise**2)) * reference * 10 ** (-40 / 20)).astype(np.float32)
    source = np.asarray(_load_prepared(prepared[plan.recording]), dtype=np.float32)
    bed = _loop(source, plan.start, n, round(0.5 * config.sample_rate))
    rms = float(np.sqrt(np.mean(bed.astype(np.float64) ** 2)))
    return (bed * (reference / max(rms, 1e-9))).astype(np.float32)


def _loop(source: np.ndarray, start: int, n: int, crossfade: int) -> np.ndarray:
    """``n`` samples of ``source`` from ``start``, looped with a linear crossfade when short."""
    if len(source) >= n:
        return source[start : start + n].copy()
    crossfade = min(crossfade, len(source) // 4)
    out = np.zeros(n, dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, crossfade, dtype=np.float32) if crossfade else np.zeros(0, np.float32)
    position = 0
    while position < n:
        chunk = source.copy()
        if crossfade and position > 0:
            chunk[:crossfade] *= ramp
        if crossfade:
            chunk[-crossfade:] *= ramp[::-1]
        stop = min(n, position + len(chunk))
        out[position:stop] += chunk[: stop - position]
        position += len(chunk) - crossfade
    return out


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono PCM16 WAV atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
