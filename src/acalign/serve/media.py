"""Pictures and curves for the web page: a log-mel spectrogram PNG and thinned-out curves.

The spectrogram here is for looking at, not for the model: it uses the paper's analysis
(40 ms window, 20 ms hop, 64 mel bands from 12 Hz to 8 kHz) at the file's own rate, but widens
the hop on long recordings so the image never exceeds :data:`MAX_COLUMNS` columns, and it
streams the file so an hour-long recording costs no more memory than a clip.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import numpy as np

from acalign.data.features import mel_filterbank
from acalign.errors import DataError

MAX_COLUMNS = 4000
MAX_CURVE_POINTS = 3000


def log_mel_display(
    path: str | os.PathLike,
    *,
    n_mels: int = 64,
    fmin: float = 12.0,
    fmax: float = 8000.0,
) -> tuple[np.ndarray, float]:
    """Log-mel energies in dB of an audio file, shape ``(n_mels, columns)``, and the top frequency.

    Column ``c`` is centred at ``c * hop`` samples. The file is read in blocks of about a
    million samples, so memory does not grow with its length.

    Raises:
        DataError: libsndfile cannot read the file.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as audio:
            sample_rate, n = audio.samplerate, audio.frames
            top = min(fmax, sample_rate / 2.0)
            win = max(16, int(round(0.04 * sample_rate)))
            n_fft = 1 << (win - 1).bit_length()
            hop = max(int(round(0.02 * sample_rate)), int(np.ceil(n / (MAX_COLUMNS - 1))))
            n_cols = 1 + n // hop
            filters = mel_filterbank(
                sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=top
            ).T.astype(np.float32)
            window = np.zeros(n_fft, dtype=np.float32)
            window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = np.hanning(win)
            mel = np.empty((n_cols, n_mels), dtype=np.float32)
            step = max(1, min(512, (1 << 20) // hop))
            for c0 in range(0, n_cols, step):
                c1 = min(n_cols, c0 + step)
                start = c0 * hop - n_fft // 2
                block = _read_mono(audio, start, (c1 - 1) * hop - n_fft // 2 + n_fft)
                frames = np.lib.stride_tricks.sliding_window_view(block, n_fft)[::hop][: c1 - c0]
                power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
                mel[c0:c1] = power @ filters
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read audio for the spectrogram ({exc})") from None
    return 10.0 * np.log10(mel.T + 1e-10), float(top)


def _read_mono(audio: Any, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` of an open SoundFile, mixed to mono, zeros outside the file."""
    lo, hi = max(0, start), min(audio.frames, stop)
    data = np.zeros(0, dtype=np.float32)
    if hi > lo:
        audio.seek(lo)
        data = audio.read(hi - lo, dtype="float32", always_2d=True).mean(axis=1)
    out = np.zeros(stop - start, dtype=np.float32)
    out[lo - start : lo - start + len(data)] = data
    return out


def spectrogram_png(db: np.ndarray, *, dynamic_range: float = 80.0) -> bytes:
    """Render a dB spectrogram ``(bins, columns)`` as a PNG, low frequencies at the bottom."""
    from matplotlib.image import imsave

    top = float(np.max(db)) if db.size else 0.0
    buffer = io.BytesIO()
    imsave(buffer, db, cmap="magma", origin="lower", vmin=top - dynamic_range, vmax=top, format="png")
    return buffer.getvalue()


def png_data_url(png: bytes) -> str:
    """A ``data:`` URL for a PNG, so a JSON response can carry the picture."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thin_curve(
    times: np.ndarray, values: np.ndarray, *, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a curve to at most ``max_points`` points, keeping each block's maximum.

    Maxima (not means) keep short peaks visible on a long recording.
    """
    n = len(values)
    if n <= max_points:
        return times, values
    block = int(np.ceil(n / max_points))
    usable = (n // block) * block
    t = times[:usable].reshape(-1, block).mean(axis=1)
    v = values[:usable].reshape(-1, block).max(axis=1)
    if usable < n:
        t = np.append(t, times[usable:].mean())
        v = np.append(v, values[usable:].max())
    return t, v
