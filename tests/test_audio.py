"""Audio decoding: formats, mono mix-down, resampling, streaming blocks and user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acalign.data import audio as audio_mod
from acalign.data.audio import audio_duration, iter_audio_blocks, load_audio
from acalign.errors import DataError


def write_tone(
    path: Path,
    *,
    sample_rate: int,
    seconds: float,
    freq: float = 440.0,
    channels: int = 1,
    subtype: str | None = "PCM_16",
    fmt: str | None = None,
) -> np.ndarray:
    """Write a sine tone (each channel a different amplitude); return the (n, channels) data."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.stack([tone * (1.0 - 0.4 * c) for c in range(channels)], axis=1).astype(np.float32)
    sf.write(path, data, sample_rate, subtype=subtype, format=fmt)
    return data


def peak_frequency(y: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest magnitude in the Hann-windowed spectrum of ``y``."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * sample_rate / len(y))


def test_resampling_keeps_a_sine_at_its_frequency(tmp_path):
    path = tmp_path / "tone.wav"
    write_tone(path, sample_rate=44100, seconds=2.0, freq=1234.0)
    y = load_audio(path, sample_rate=32000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 64000
    assert abs(peak_frequency(y, 32000) - 1234.0) < 1.0  # bins are 0.5 Hz wide
    # Away from the edges (the resampler's filter ramps there), the amplitude is kept.
    assert np.abs(y[2000:-2000]).max() == pytest.approx(0.5, abs=2e-3)


def test_load_audio_matches_librosa_load(tmp_path, rng):
    librosa = pytest.importorskip("librosa")
    path = tmp_path / "noise.wav"
    sf.write(path, (0.3 * rng.standard_normal(22050)).astype(np.float32), 22050, subtype="PCM_16")
    ours = load_audio(path, sample_rate=16000)
    theirs, _ = librosa.load(path, sr=16000)  # soxr_hq, as ours
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_stereo_file_is_mixed_to_the_channel_mean(tmp_path, subtype):
    path = tmp_path / "stereo.wav"
    data = write_tone(path, sample_rate=16000, seconds=0.5, channels=2, subtype=subtype)
    y = load_audio(path, sample_rate=16000)
    np.testing.assert_allclose(y, data.mean(axis=1), atol=1e-4)


@pytest.mark.parametrize("channels", [1, 2])
def test_pcm16_fast_path_is_bit_identical_to_libsndfile_floats(tmp_path, rng, channels):
    path = tmp_path / "pcm16.wav"
    data = rng.uniform(-1, 1, (8000, channels)).astype(np.float32)
    sf.write(path, data, 8000, subtype="PCM_16")
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(load_audio(path, sample_rate=8000), expected)


def test_array_input_channels_first_and_source_rate():
    stereo = np.stack([np.ones(4000), np.zeros(4000)]).astype(np.float32)  # (channels, n)
    y = load_audio(stereo, sample_rate=8000, source_rate=16000)
    assert len(y) == 2000
    np.testing.assert_allclose(y[200:-200], 0.5, atol=1e-3)
    with pytest.raises(DataError, match="channels, samples"):
        load_audio(stereo.T, sample_rate=8000)


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix"),
    [("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")],
)
def test_compressed_formats_decode(tmp_path, fmt, subtype, suffix):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile build cannot write {fmt}/{subtype}")
    path = tmp_path / f"tone.{suffix}"
    write_tone(path, sample_rate=44100, seconds=1.0, freq=880.0, channels=2, subtype=subtype, fmt=fmt)
    y = load_audio(path, sample_rate=32000)
    # Lossy codecs may add or trim a few ms of padding; the content must survive.
    assert abs(len(y) - 32000) < 0.05 * 32000
    assert abs(peak_frequency(y, 32000) - 880.0) < 2.0
    assert audio_duration(path) == pytest.approx(1.0, abs=0.06)


def test_audio_duration_reads_the_header(tmp_path):
    path = tmp_path / "tone.wav"
    write_tone(path, sample_rate=22050, seconds=1.5)
    assert audio_duration(path) == pytest.approx(1.5)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(DataError, match="nope.wav: audio file not found"):
        load_audio(path, sample_rate=16000)
    with pytest.raises(DataError, match="nope.wav"):
        audio_duration(path)


def test_a_folder_given_as_audio_is_named_as_a_folder(tmp_path):
    folder = tmp_path / "clips.wav"
    folder.mkdir()
    with pytest.raises(DataError, match="clips.wav: is a folder, not an audio file"):
        load_audio(folder, sample_rate=16000)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="corrupt.wav: not a readable audio file") as info:
        load_audio(path, sample_rate=16000)
    assert "\n" not in str(info.value)


def test_truncated_flac_raises_data_error(tmp_path, rng):
    path = tmp_path / "cut.flac"
    sf.write(path, rng.uniform(-0.5, 0.5, 48000).astype(np.float32), 16000, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a download cut short
    try:
        y = load_audio(path, sample_rate=16000)
    except DataError as exc:
        assert "cut.flac" in str(exc)
    else:  # libsndfile may decode the frames present: then they must be fewer and finite
        assert 0 < len(y) < 48000 and np.isfinite(y).all()


def test_empty_file_names_the_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(DataError, match="empty.wav: audio is empty"):
        load_audio(path, sample_rate=16000)
    with pytest.raises(DataError, match="empty.wav: audio is empty"):
        list(iter_audio_blocks(path, sample_rate=16000, block_seconds=1.0))


def test_non_finite_samples_are_rejected(tmp_path):
    path = tmp_path / "nan.wav"
    data = np.zeros(1600, dtype=np.float32)
    data[100] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match="nan.wav: audio holds NaN"):
        load_audio(path, sample_rate=16000)
    with pytest.raises(DataError, match="<array>: audio holds NaN"):
        load_audio(data, sample_rate=16000)


def test_bad_rates_are_user_errors():
    with pytest.raises(DataError, match="sample_rate must be a positive integer, got 0"):
        load_audio(np.zeros(10, dtype=np.float32), sample_rate=0)


@pytest.mark.parametrize(("block", "overlap"), [(0.25, 0.0), (0.3, 0.1), (5.0, 1.0)])
def test_blocks_reassemble_the_whole_signal(tmp_path, monkeypatch, rng, block, overlap):
    # Small disk reads so that one block spans several reads and resampler calls.
    monkeypatch.setattr(audio_mod, "_READ_FRAMES", 1000)
    path = tmp_path / "long.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (44100, 2)).astype(np.float32), 44100, subtype="PCM_16")
    full = load_audio(path, sample_rate=16000)
    blocks = list(iter_audio_blocks(path, sample_rate=16000, block_seconds=block,
                                    overlap_seconds=overlap))
    block_len, hop = round(block * 16000), round((block - overlap) * 16000)
    assert [start for start, _ in blocks] == [k * hop for k in range(len(blocks))]
    assert all(len(b) == block_len for _, b in blocks[:-1])
    assert blocks[-1][0] + len(blocks[-1][1]) == len(full)
    for start, b in blocks:
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, full[start : start + len(b)], atol=1e-5)


def test_block_arguments_are_checked(tmp_path):
    path = tmp_path / "tone.wav"
    write_tone(path, sample_rate=16000, seconds=0.2)
    with pytest.raises(DataError, match="overlap_seconds"):
        iter_audio_blocks(path, sample_rate=16000, block_seconds=1.0, overlap_seconds=1.0)
    with pytest.raises(DataError, match="missing.wav: audio file not found"):
        iter_audio_blocks(tmp_path / "missing.wav", sample_rate=16000, block_seconds=1.0)


def test_block_streaming_memory_does_not_grow_with_length(tmp_path, rng):
    import tracemalloc

    def peak_bytes(seconds: int) -> int:
        path = tmp_path / f"long{seconds}.wav"
        sf.write(path, rng.uniform(-0.5, 0.5, seconds * 22050).astype(np.float32), 22050,
                 subtype="PCM_16")
        tracemalloc.start()
        try:
            for _ in iter_audio_blocks(path, sample_rate=16000, block_seconds=1.0,
                                       overlap_seconds=0.5):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak_bytes(10), peak_bytes(80)
    assert long < 1.3 * short  # 8× the audio, about the same peak
    assert long < 16 * 65536 * 4  # a few read chunks and blocks, never the whole file
