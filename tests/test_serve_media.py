"""The serve page's pictures: the streamed display spectrogram and thinned curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acalign.data.features import hz_to_mel, mel_to_hz
from acalign.errors import DataError
from acalign.serve import media
from test_serve_fakes import scene_clip


def test_spectrogram_shows_the_band_and_the_event_in_time(tmp_path: Path) -> None:
    path = scene_clip(tmp_path / "dog.wav", [("dog", 1.0, 2.0)], seconds=3.0)  # 430-950 Hz noise
    db, fmax = media.log_mel_display(path)
    assert db.shape == (64, 1 + 3 * 32000 // 640) and fmax == 8000.0
    centres = mel_to_hz(np.linspace(hz_to_mel(12.0), hz_to_mel(8000.0), 66))[1:-1]
    loudest = centres[int(np.argmax(db[:, 75]))]  # the column at 1.5 s
    assert 430 <= loudest <= 950
    band = int(np.argmax(db[:, 75]))
    assert db[band, 75] - db[band, 25] > 30  # the event stands 30 dB above the quiet part


def test_long_file_is_capped_in_columns_and_streamed(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros(8000 * 300, dtype=np.float32), 8000)  # 5 minutes at 8 kHz
    db, fmax = media.log_mel_display(path)
    assert db.shape[1] <= media.MAX_COLUMNS and fmax == 4000.0
    assert np.isfinite(db).all()


def test_spectrogram_png_and_unreadable_file(tmp_path: Path) -> None:
    png = media.spectrogram_png(np.random.default_rng(0).normal(size=(64, 100)))
    assert png.startswith(b"\x89PNG") and media.png_data_url(png).startswith("data:image/png;base64,")
    (tmp_path / "x.wav").write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot read audio"):
        media.log_mel_display(tmp_path / "x.wav")


def test_thin_curve_keeps_peaks() -> None:
    times = np.arange(10_000) / 50.0
    values = np.zeros(10_000)
    values[5_001] = 1.0
    t, v = media.thin_curve(times, values, max_points=1000)
    assert len(t) == len(v) <= 1001 and v.max() == 1.0
    assert t[int(np.argmax(v))] == pytest.approx(times[5_001], abs=0.2)
    same_t, same_v = media.thin_curve(times[:10], values[:10], max_points=1000)
    assert len(same_t) == 10
