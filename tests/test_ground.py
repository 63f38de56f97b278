"""Grounding: events found where they were placed; windowed long files equal whole-file scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from acalign.errors import AcalignError, DataError
from acalign.infer.grounding import (
    SharedFrontEnd,
    WindowPlan,
    array_blocks,
    downsample_max,
    end_aligned_windows,
    iter_shared_frames,
    iter_stitched_frames,
    median_filter_frames,
)
from acalign.infer.model import load_model
from acalign.infer.synthetic import save_band_detector, save_random_model, scene

RATE = 32000


@pytest.fixture(scope="module")
def random_paper_model(tmp_path_factory: pytest.TempPathFactory):
    """An untrained paper-size CRNN: real receptive field and BiGRU context, random weights."""
    return load_model(save_random_model(tmp_path_factory.mktemp("models") / "random", dim=32))


def _close_segments(found, expected, *, tol: float) -> bool:
    return len(found) == len(expected) and all(
        abs(f[0] - e[0]) <= tol and abs(f[1] - e[1]) <= tol for f, e in zip(found, expected, strict=True)
    )


# --------------------------------------------------------------------------- window geometry


@pytest.mark.parametrize(
    "n_samples",
    [1, 639, 640, 5_000, 319_999, 320_000, 320_001, 320_640, 576_000, 576_001, 1_000_000, 2_880_321],
)
def test_stitched_frames_cover_each_frame_once_in_order(n_samples: int) -> None:
    plan = WindowPlan.from_seconds(window_seconds=10, overlap_seconds=2, sample_rate=RATE, hop_length=640)
    waveform = np.arange(n_samples, dtype=np.float64)  # each sample holds its own index

    def encode(windows: np.ndarray) -> np.ndarray:
        # frame j of a window is centred on its sample j * hop: report that sample's global index
        frames = 1 + windows.shape[1] // plan.hop_length
        return (windows[:, :1] + np.arange(frames) * plan.hop_length)[:, :, None]

    windows = end_aligned_windows(array_blocks(waveform, plan=plan), plan=plan)
    out = np.concatenate(list(iter_stitched_frames(windows, encode=encode, plan=plan, batch_size=3)))
    np.testing.assert_array_equal(out[:, 0], np.arange(1 + n_samples // 640) * 640)


def test_every_window_but_a_short_recording_is_nearly_full_and_frame_aligned() -> None:
    plan = WindowPlan.from_seconds(window_seconds=10, overlap_seconds=2, sample_rate=RATE, hop_length=640)
    n = 1_000_123
    windows = list(end_aligned_windows(array_blocks(np.zeros(n, np.float32), plan=plan), plan=plan))
    assert all(start % 640 == 0 for start, _ in windows)
    assert all(plan.window - 640 < len(w) <= plan.window for _, w in windows)
    assert windows[-1][0] + len(windows[-1][1]) == n


def _index_front_end(plan: WindowPlan, *, reduction: int = 4, context: int = 16) -> SharedFrontEnd:
    """A front end over a waveform holding each sample's own index: every row reports the
    global sample its frame is centred on, so misplaced rows or slices show in the output."""
    hop = plan.hop_length

    def features(samples: np.ndarray) -> np.ndarray:
        return samples[0] + np.arange(1 + samples.shape[0] // hop, dtype=np.float64) * hop

    def front(rows: np.ndarray) -> np.ndarray:
        return rows[: rows.shape[0] // reduction * reduction : reduction]

    def head(pieces: list[np.ndarray], frames: int) -> np.ndarray:
        assert all(piece.shape == (frames // reduction,) for piece in pieces)
        for piece in pieces:  # rows are consecutive front rows of the same recording
            np.testing.assert_array_equal(np.diff(piece), reduction * hop)
        return np.stack([piece[0] + np.arange(frames) * hop for piece in pieces])[:, :, None]

    def whole(windows: np.ndarray) -> np.ndarray:
        return (windows[:, :1] + np.arange(1 + windows.shape[1] // hop) * hop)[:, :, None]

    return SharedFrontEnd(
        features=features, front=front, head=head, whole=whole, reduction=reduction,
        context=context, feature_margin=512,
    )


@pytest.mark.parametrize(
    "n_samples",
    [1, 639, 5_000, 320_000, 320_001, 320_640, 322_000, 576_001, 1_000_000, 2_880_321, 5_432_109],
)
def test_shared_front_end_covers_each_frame_once_in_order(n_samples: int) -> None:
    plan = WindowPlan.from_seconds(window_seconds=10, overlap_seconds=2, sample_rate=RATE, hop_length=640)
    waveform = np.arange(n_samples, dtype=np.float64)
    windows = end_aligned_windows(array_blocks(waveform, plan=plan), plan=plan, align_frames=4)
    chunks = iter_shared_frames(windows, encoder=_index_front_end(plan), plan=plan, batch_size=3)
    out = np.concatenate(list(chunks))
    np.testing.assert_array_equal(out[:, 0], np.arange(1 + n_samples // 640) * 640)


def test_aligned_tail_starts_on_a_pooled_frame_and_ends_the_recording() -> None:
    plan = WindowPlan.from_seconds(window_seconds=10, overlap_seconds=2, sample_rate=RATE, hop_length=640)
    for n in (1_000_123, 333_333, 320_641):
        windows = list(end_aligned_windows(array_blocks(np.zeros(n, np.float32), plan=plan), plan=plan, align_frames=4))
        assert all(start % (4 * 640) == 0 for start, _ in windows)
        assert all(plan.window - 640 < len(w) < plan.window + 4 * 640 for _, w in windows)
        assert windows[-1][0] + len(windows[-1][1]) == n
    with pytest.raises(DataError, match="multiple of align_frames"):
        odd = WindowPlan(window=320_000, hop=256_640, hop_length=640)  # a hop of 401 frames
        list(end_aligned_windows(array_blocks(np.zeros(600_000, np.float32), plan=odd), plan=odd, align_frames=4))


def test_shared_front_end_rows_equal_one_pass_over_the_whole_recording(random_paper_model, rng) -> None:
    """Each window's head gets exactly the rows the CRNN's convolutions give the whole file."""
    model = random_paper_model
    wave = scene(47.3, [("dog", 8.5, 9.5), ("bird", 20.0, 25.0)], rng=rng)
    plan = model.window_plan()
    received: list[torch.Tensor] = []
    shared = model._shared_front_end(lambda emb: emb.numpy(), whole=None)

    def recording_head(pieces: list[torch.Tensor], frames: int) -> np.ndarray:
        received.extend(pieces)
        return shared.head(pieces, frames)

    encoder = dataclasses.replace(shared, head=recording_head)
    windows = list(end_aligned_windows(array_blocks(wave, plan=plan), plan=plan, align_frames=4))
    frames = np.concatenate(list(iter_shared_frames(windows, encoder=encoder, plan=plan, batch_size=2)))
    with torch.inference_mode():
        whole_rows = model.aligner.encode_audio_front(model._log_mel(torch.from_numpy(wave)[None]))[0]
    assert len(received) == len(windows) == 6
    for (start, samples), piece in zip(windows, received, strict=True):
        first = start // plan.hop_length // 4
        expected = whole_rows[first : first + (1 + len(samples) // plan.hop_length) // 4]
        torch.testing.assert_close(piece, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(frames, model.embed_audio(wave, sample_rate=RATE), atol=1e-6)


def test_window_plan_rejects_bad_geometry() -> None:
    with pytest.raises(DataError, match="overlap_seconds"):
        WindowPlan.from_seconds(window_seconds=2, overlap_seconds=2, sample_rate=RATE, hop_length=640)


def test_median_filter_length_is_odd_frames() -> None:
    assert median_filter_frames(0.0, frame_rate=50) == 1
    assert median_filter_frames(0.1, frame_rate=50) == 5
    assert median_filter_frames(0.2, frame_rate=50) == 11


def test_downsample_max_keeps_short_peaks() -> None:
    values = np.zeros(10_001)
    values[4321] = 1.0
    pooled, factor = downsample_max(values, max_points=1000)
    assert pooled.shape[0] <= 1001 and factor == 11 and pooled.max() == 1.0


# --------------------------------------------------------------------------- grounding


@pytest.mark.parametrize("suffix", ["flac", "wav", "ogg", "mp3"])
def test_grounding_finds_events_where_they_were_placed(detector, tmp_path: Path, rng, suffix: str) -> None:
    wave = scene(10.0, [("dog", 2.0, 4.0), ("bird", 6.0, 7.5)], sample_rate=44100, rng=rng)
    path = tmp_path / f"scene.{suffix}"
    sf.write(path, np.stack([wave, 0.5 * wave], axis=1), 44100)  # stereo, 44.1 kHz
    dog, bird, car = detector.ground(path, ["a dog barks", "birds", "a car passes"])
    assert _close_segments([s[:2] for s in dog.segments], [(2.0, 4.0)], tol=0.05)
    assert _close_segments([s[:2] for s in bird.segments], [(6.0, 7.5)], tol=0.05)
    assert car.segments == []
    assert dog.tokens == ["a", "dog", "barks"]
    assert dog.activation.shape == dog.times.shape == (501,)
    assert dog.times[1] == pytest.approx(0.02)
    assert 0.6 < dog.segments[0][2] <= 1.0  # two of three words are "dog" words


def test_threshold_and_median_filter_arguments(detector, rng) -> None:
    wave = scene(10.0, [("dog", 2.0, 4.0), ("dog", 4.06, 6.0)], rng=rng)
    (plain,) = detector.ground(wave, ["dog"], sample_rate=RATE)
    assert len(plain.segments) == 2
    (merged,) = detector.ground(wave, ["dog"], sample_rate=RATE, median_filter=0.2)
    assert _close_segments([s[:2] for s in merged.segments], [(2.0, 6.0)], tol=0.05)
    (none,) = detector.ground(wave, ["dog"], sample_rate=RATE, threshold=0.999)
    assert none.segments == []


def test_array_and_file_give_the_same_result(detector, tmp_path: Path, rng) -> None:
    wave = scene(12.5, [("bird", 1.0, 3.0)], rng=rng)
    sf.write(tmp_path / "a.wav", wave, RATE, subtype="FLOAT")
    from_file = detector.ground(tmp_path / "a.wav", ["bird"])[0]
    from_array = detector.ground(wave, ["bird"], sample_rate=RATE)[0]
    np.testing.assert_array_equal(from_file.activation, from_array.activation)


def test_long_file_windows_find_events_across_window_cuts(detector, tmp_path: Path, rng) -> None:
    events = [("dog", 7.0, 11.0), ("bird", 15.5, 17.5), ("dog", 24.0, 29.9)]
    sf.write(tmp_path / "long.wav", scene(30.0, events, rng=rng), RATE)
    dog, bird = detector.ground(tmp_path / "long.wav", ["dog", "bird"])
    assert _close_segments([s[:2] for s in dog.segments], [(7.0, 11.0), (24.0, 29.9)], tol=0.05)
    assert _close_segments([s[:2] for s in bird.segments], [(15.5, 17.5)], tol=0.05)


def test_recording_shorter_than_a_window_is_identical_to_whole_file(random_paper_model, rng) -> None:
    wave = scene(7.3, [("dog", 2.0, 4.0)], rng=rng)
    windowed = random_paper_model.embed_audio(wave, sample_rate=RATE)
    whole = random_paper_model.embed_audio(wave, sample_rate=RATE, window_seconds=float("inf"))
    np.testing.assert_array_equal(windowed, whole)


def test_long_recording_windowed_matches_whole_file_within_tolerance(
    random_paper_model, tmp_path: Path, rng
) -> None:
    """30 s: same frames and times; activations within 0.01 (the BiGRU's context beyond the
    1 s margin is all that differs)."""
    wave = scene(30.0, [("dog", 8.5, 9.5), ("bird", 20.0, 25.0)], rng=rng)
    sf.write(tmp_path / "long.wav", wave, RATE)
    model = random_paper_model
    windowed = model.embed_audio(tmp_path / "long.wav")
    whole = model.embed_audio(tmp_path / "long.wav", window_seconds=float("inf"))
    assert windowed.shape == whole.shape == (1501, model.dim)
    words = np.concatenate(model.embed_text(["dog", "bird"]))
    act_windowed = np.maximum(windowed @ words.T, 0)
    act_whole = np.maximum(whole @ words.T, 0)
    assert np.abs(act_windowed - act_whole).max() < 0.01
    assert np.abs(windowed - whole).max() < 0.02
    # and the streamed activations are those of the windowed embeddings
    streamed = model.activations(tmp_path / "long.wav", [["dog"], ["bird"]])
    np.testing.assert_allclose(streamed, act_windowed, atol=1e-5)


def test_windows_encoded_separately_stay_close_to_shared_convolutions(random_paper_model, rng) -> None:
    wave = scene(41.0, [("dog", 8.5, 9.5)], rng=rng)
    model = random_paper_model
    shared = model.embed_audio(wave, sample_rate=RATE)
    model.share_convolutions = False
    try:
        separate = model.embed_audio(wave, sample_rate=RATE)
    finally:
        model.share_convolutions = True
    assert shared.shape == separate.shape == (2051, model.dim)
    assert 0 < np.abs(shared - separate).max() < 0.02  # the paths differ, but only at window edges


def test_bf16_stays_close_to_float32(tmp_path: Path, rng) -> None:
    path = save_band_detector(tmp_path / "m")
    wave = scene(35.0, [("dog", 2.0, 4.0), ("dog", 25.0, 26.0)], rng=rng)  # shared convolutions too
    exact = load_model(path).ground(wave, ["dog"], sample_rate=RATE)[0]
    fast = load_model(path, bf16=True).ground(wave, ["dog"], sample_rate=RATE)[0]
    assert np.abs(exact.activation - fast.activation).max() < 0.05
    assert _close_segments(fast.segments, exact.segments, tol=0.05)


# --------------------------------------------------------------------------- embeddings and scores


def test_embeddings_shapes_and_clip_vector(detector, rng) -> None:
    wave = scene(10.0, [("dog", 2.0, 4.0)], rng=rng)
    frames = detector.embed_audio(wave, sample_rate=RATE)
    assert frames.shape == (501, detector.dim) and frames.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(detector.embed_audio_clip(wave, sample_rate=RATE), frames.mean(0), atol=1e-6)
    words = detector.embed_text(["a dog barks", "bird"])
    assert [w.shape for w in words] == [(3, detector.dim), (1, detector.dim)]


def test_score_prefers_the_matching_caption(detector, rng) -> None:
    wave = scene(10.0, [("bird", 1.0, 9.0)], rng=rng)
    scores = detector.score(wave, ["dog", "birds chirp", "a car"], sample_rate=RATE)
    assert scores.shape == (3,)
    assert scores[1] > 0.3 > scores[0] and scores[2] == 0.0


def test_score_equals_model_reduction_of_frames(detector, rng) -> None:
    wave = scene(10.0, [("bird", 1.0, 3.0), ("dog", 5.0, 6.0)], rng=rng)
    frames = detector.embed_audio(wave, sample_rate=RATE)
    words = detector.embed_text(["birds and dogs"])[0]
    expected = np.maximum(frames @ words.T, 0).mean()
    assert detector.score(wave, ["birds and dogs"], sample_rate=RATE)[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("phrases", [[""], ["dog", "  "], ["!!"], []])
def test_empty_phrases_are_refused(detector, phrases) -> None:
    with pytest.raises(AcalignError, match="empty|no caption"):
        detector.ground(np.zeros(RATE, np.float32), phrases, sample_rate=RATE)


def test_array_needs_its_sample_rate(detector) -> None:
    with pytest.raises(AcalignError, match="sample_rate is required"):
        detector.embed_audio(np.zeros(RATE, np.float32))


def test_bad_audio_files_raise_data_errors(detector, tmp_path: Path) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all" * 64)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    for name in ("missing.wav", "garbage.wav", "empty.wav"):
        with pytest.raises(DataError, match=name):
            detector.ground(tmp_path / name, ["dog"])
