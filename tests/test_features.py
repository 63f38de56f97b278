"""Log-mel features (against librosa), FeatureConfig, the HDF5 store, extraction, resume, shards, CLI."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import acalign.data.features as features_module
from acalign.cli import main
from acalign.config import from_dict, to_dict
from acalign.data.audio import load_audio
from acalign.data.features import (
    CLIPS_GROUP,
    FeatureConfig,
    FeatureStore,
    LogMel,
    compute_features,
    encode_id,
    extract_features,
    extract_files,
    log_mel,
    mel_filterbank,
    merge_feature_stores,
    partial_path,
    shard_items,
)
from acalign.data.manifest import Caption, Clip, Manifest, write_manifest
from acalign.errors import AcalignError, DataError

_original_extract_one = features_module._extract_one

# --------------------------------------------------------------------------- helpers


def chirp_plus_noise(rng: np.random.Generator, *, sample_rate: int, seconds: float) -> np.ndarray:
    """A loud linear chirp sweeping 50 Hz → 0.45·sr, light noise, and a stretch of silence."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    sweep = 50.0 * t + 0.5 * (0.45 * sample_rate - 50.0) / seconds * t**2
    y = 0.5 * np.sin(2 * np.pi * sweep) + 0.01 * rng.standard_normal(n)
    y[n // 3 : n // 2] = 0.0
    return y.astype(np.float32)


def write_clips(
    folder: Path, rng: np.random.Generator, ids: list[str], *, sample_rate: int = 44100
) -> list[tuple[str, Path]]:
    """Write one short PCM16 clip per id (lengths vary, some stereo); return (id, path) items."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for k, audio_id in enumerate(ids):
        n = int(sample_rate * (0.3 + 0.1 * (k % 4)))
        data = 0.3 * rng.standard_normal((n, 1 + k % 2))
        path = folder / audio_id
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data.astype(np.float32), sample_rate, subtype="PCM_16", format="WAV")
        items.append((audio_id, path))
    return items


def make_data_dir(root: Path, rng: np.random.Generator, splits: dict[str, list[str]]) -> Path:
    """A data directory in the documented layout: DIR/{split}.json + DIR/audio/{split}/{id}."""
    for split, ids in splits.items():
        write_clips(root / "audio" / split, rng, ids)
        clips = [
            Clip(audio_id=a, captions=[Caption(f"{split}-{a}", "a sound", ["a", "sound"])])
            for a in ids
        ]
        write_manifest(Manifest(clips), root / f"{split}.json")
    return root


def store_contents(path: Path) -> dict[str, np.ndarray]:
    with FeatureStore(path) as store:
        return {audio_id: store[audio_id] for audio_id in store}


def assert_same_store(a: Path, b: Path) -> None:
    left, right = store_contents(a), store_contents(b)
    assert sorted(left) == sorted(right)
    for audio_id in left:
        np.testing.assert_array_equal(left[audio_id], right[audio_id])
    assert FeatureStore(a).config == FeatureStore(b).config


IDS = ["a.wav", "b.wav", "c d.wav", "sub/e.wav", "f%.wav", "g.wav", "h.wav"]


# --------------------------------------------------------------------------- FeatureConfig


def test_default_config_is_the_papers():
    cfg = FeatureConfig()
    assert (cfg.win_length, cfg.hop_length, cfg.n_fft) == (1280, 640, 2048)
    assert cfg.frame_rate == 50.0
    assert cfg.pad_value == pytest.approx(math.log(1e-8))
    assert cfg.num_frames(320000) == 501  # a 10 s clip


@pytest.mark.parametrize(
    ("sample_rate", "n_fft"), [(16000, 1024), (22050, 1024), (44100, 2048), (48000, 2048)]
)
def test_n_fft_is_next_power_of_two(sample_rate, n_fft):
    cfg = FeatureConfig(sample_rate=sample_rate)
    assert cfg.n_fft == n_fft >= cfg.win_length > n_fft // 2


def test_config_round_trips_through_dict_yaml_and_json():
    cfg = FeatureConfig(sample_rate=16000, n_mels=40, fmax=7000.0)
    assert from_dict(FeatureConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg
    assert FeatureConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 16000, "fmax": 9000.0}, "fmax must be ≤ sample_rate/2, got fmax=9000.0"),
        ({"n_mels": 0}, "n_mels must be a positive integer, got 0"),
        ({"hop_seconds": -0.01}, "hop_seconds must be positive"),
        ({"log_eps": 0.0}, "log_eps must be positive"),
        ({"fmin": 9000.0}, "fmax must be > fmin"),
        ({"sample_rate": 32000.5}, "sample_rate must be a positive integer"),
    ],
)
def test_bad_config_values_are_user_errors(kwargs, message):
    with pytest.raises(AcalignError, match=message):
        FeatureConfig(**kwargs)


# --------------------------------------------------------------------------- log-mel vs librosa


@pytest.mark.parametrize("sample_rate", [16000, 22050, 32000, 44100])
def test_mel_filterbank_matches_librosa(sample_rate):
    librosa = pytest.importorskip("librosa")
    cfg = FeatureConfig(sample_rate=sample_rate, fmax=min(8000.0, sample_rate / 2))
    ours = mel_filterbank(
        sample_rate=sample_rate, n_fft=cfg.n_fft, n_mels=64, fmin=cfg.fmin, fmax=cfg.fmax
    )
    theirs = librosa.filters.mel(
        sr=sample_rate, n_fft=cfg.n_fft, n_mels=64, fmin=cfg.fmin, fmax=cfg.fmax
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("sample_rate", [16000, 32000])
def test_log_mel_matches_librosa(rng, sample_rate):
    librosa = pytest.importorskip("librosa")
    cfg = FeatureConfig(sample_rate=sample_rate)
    y = chirp_plus_noise(rng, sample_rate=sample_rate, seconds=3.0)
    ours = log_mel(y, cfg)
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        power=2.0,
    )
    theirs = np.log(mel + cfg.log_eps).T
    assert ours.shape == theirs.shape == (cfg.num_frames(len(y)), cfg.n_mels)
    assert ours.dtype == np.float32
    # Measured max |diff| ≈ 4e-5 (log units). It is float32 FFT round-off: an error of
    # ~1e-7 of a frame's peak power becomes a relative error up to ~1e-4 in bands 60 dB
    # below the chirp (a float64 STFT brings it under 1e-6). 1e-4 = 0.0004 dB.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    # Digital silence sits exactly at pad_value.
    silent = ours[cfg.num_frames(len(y) // 3) + 2 : cfg.num_frames(len(y) // 2) - 2]
    np.testing.assert_allclose(silent, cfg.pad_value, atol=1e-6)


@pytest.mark.parametrize("n_samples", [1, 639, 640, 641, 1024, 1025, 32000, 32639])
def test_frame_count_is_one_plus_n_over_hop(n_samples):
    cfg = FeatureConfig()
    out = log_mel(np.zeros(n_samples, dtype=np.float32), cfg)
    assert out.shape == (1 + n_samples // cfg.hop_length, cfg.n_mels)


@settings(max_examples=30, deadline=None)
@given(
    n_samples=st.integers(min_value=1, max_value=40000),
    sample_rate=st.sampled_from([8000, 16000, 22050, 32000]),
    hop_seconds=st.sampled_from([0.005, 0.01, 0.02, 0.0231]),
)
def test_frame_count_for_any_length_and_hop(n_samples, sample_rate, hop_seconds):
    cfg = FeatureConfig(sample_rate=sample_rate, hop_seconds=hop_seconds, fmax=sample_rate / 2)
    frames = log_mel(np.zeros(n_samples, dtype=np.float32), cfg).shape[0]
    assert frames == cfg.num_frames(n_samples) == 1 + n_samples // cfg.hop_length
    # Frame t is centred at t * hop / sr seconds: the last frame's centre lies inside the clip.
    assert (frames - 1) * cfg.hop_length <= n_samples


def test_batched_module_equals_one_by_one(rng):
    cfg = FeatureConfig(sample_rate=16000)
    batch = np.stack([chirp_plus_noise(rng, sample_rate=16000, seconds=1.0) for _ in range(3)])
    module = LogMel(cfg)
    with torch.no_grad():
        out = module(torch.from_numpy(batch))
    assert out.shape == (3, cfg.num_frames(16000), cfg.n_mels)
    for row, y in zip(out, batch, strict=True):
        np.testing.assert_allclose(row.numpy(), log_mel(y, cfg), atol=1e-5)
    with pytest.raises(AcalignError, match="waveforms"):
        module(torch.zeros(2, 2, 10))


@pytest.mark.parametrize("extra_frames", [0, 1, 255, 256, 300])
def test_chunked_frames_equal_one_pass_over_all_frames(rng, extra_frames):
    """On CPU, long inputs go through LogMel a chunk of frames at a time: no seams, same values."""
    cfg = FeatureConfig(sample_rate=16000)
    module = LogMel(cfg)
    n = (module.frames_per_chunk + extra_frames) * cfg.hop_length + int(rng.integers(cfg.hop_length))
    batch = torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32))
    with torch.no_grad():
        out = module(batch)
        half = cfg.n_fft // 2
        frames = torch.nn.functional.pad(batch, (half, half)).unfold(-1, cfg.n_fft, cfg.hop_length)
        whole = module._log_mel_frames(frames)  # every frame in one pass
    assert out.shape == (2, cfg.num_frames(n), cfg.n_mels)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-5)


def test_mel_product_by_band_groups_equals_the_dense_product(rng):
    for cfg in (FeatureConfig(), FeatureConfig(sample_rate=16000, n_mels=128), FeatureConfig(fmin=0.0, fmax=16000.0, n_mels=40)):
        module = LogMel(cfg)
        power = torch.from_numpy(rng.random((50, module.n_used_bins)).astype(np.float32))
        torch.testing.assert_close(module._mel(power), power @ module.mel_basis, rtol=1e-5, atol=1e-6)


def test_log_mel_rejects_non_mono_input():
    with pytest.raises(AcalignError, match=r"shape \(n,\)"):
        log_mel(np.zeros((2, 100), dtype=np.float32), FeatureConfig())


def test_compute_features_resamples_then_log_mels(tmp_path, rng):
    path = tmp_path / "clip.wav"
    sf.write(path, chirp_plus_noise(rng, sample_rate=44100, seconds=1.0), 44100, subtype="PCM_16")
    cfg = FeatureConfig()
    expected = log_mel(load_audio(path, sample_rate=cfg.sample_rate), cfg)
    np.testing.assert_array_equal(compute_features(path, cfg), expected)


# --------------------------------------------------------------------------- store


def test_extract_files_writes_the_documented_layout(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:5])
    cfg = FeatureConfig(sample_rate=16000)
    out = extract_files(items, tmp_path / "f.h5", cfg, workers=0, progress=False)
    assert out == tmp_path / "f.h5" and not partial_path(out).exists()
    with h5py.File(out, "r") as handle:
        assert FeatureConfig.from_json(handle.attrs["feature_config"]) == cfg
        names = set(handle[CLIPS_GROUP].keys())
        assert names == {encode_id(a) for a, _ in items}
        assert all(handle[CLIPS_GROUP][n].dtype == np.float32 for n in names)
    with FeatureStore(out) as store:
        assert len(store) == 5 and store.config == cfg
        assert "sub/e.wav" in store and "zzz.wav" not in store
        for audio_id, path in items:
            np.testing.assert_array_equal(store[audio_id], compute_features(path, cfg))
            assert store.num_frames(audio_id) == store[audio_id].shape[0]
        with pytest.raises(KeyError, match="no features for audio id 'zzz.wav'"):
            store["zzz.wav"]


def test_workers_hand_back_the_same_features_through_shared_memory_or_the_pipe(tmp_path, rng, monkeypatch):
    items = write_clips(tmp_path / "audio", rng, [f"c{k}.wav" for k in range(9)])
    cfg = FeatureConfig(sample_rate=16000)
    alone = extract_files(items, tmp_path / "alone.h5", cfg, workers=0, progress=False)
    shared = extract_files(items, tmp_path / "shared.h5", cfg, workers=2, progress=False)
    # Slots smaller than any clip's features: every result travels through the pipe instead.
    monkeypatch.setattr(features_module._ForkedExtractors, "SLOT_BYTES", 1024)
    piped = extract_files(items, tmp_path / "piped.h5", cfg, workers=2, progress=False)
    with FeatureStore(alone) as a, FeatureStore(shared) as b, FeatureStore(piped) as c:
        assert sorted(a) == sorted(b) == sorted(c)
        for audio_id in a:
            np.testing.assert_array_equal(a[audio_id], b[audio_id])
            np.testing.assert_array_equal(a[audio_id], c[audio_id])


def _extract_or_fail(item, config):
    if item[0] == "c3.wav":
        raise ValueError("unexpected failure in a worker")
    return _original_extract_one(item, config)


def _extract_or_die(item, config):
    if item[0] == "c3.wav":
        os._exit(3)
    return _original_extract_one(item, config)


@pytest.mark.parametrize(("replacement", "error", "message"), [
    (_extract_or_fail, ValueError, "unexpected failure in a worker"),
    (_extract_or_die, AcalignError, r"worker died \(exit code 3\)"),
])
def test_a_failing_or_dead_worker_stops_the_run_and_keeps_finished_clips(
    tmp_path, rng, monkeypatch, replacement, error, message
):
    items = write_clips(tmp_path / "audio", rng, [f"c{k}.wav" for k in range(8)])
    out = tmp_path / "f.h5"
    monkeypatch.setattr(features_module, "_extract_one", replacement)  # inherited by forked workers
    with pytest.raises(error, match=message):
        extract_files(items, out, FeatureConfig(sample_rate=16000), workers=2, progress=False)
    assert not out.exists() and partial_path(out).exists()
    monkeypatch.undo()
    extract_files(items, out, FeatureConfig(sample_rate=16000), workers=2, progress=False)
    with FeatureStore(out) as store:
        assert len(store) == 8


def _read_in_worker(store: FeatureStore) -> tuple[int, float]:
    return os.getpid(), float(store["a.wav"].sum())


def test_store_is_safe_in_forked_and_pickled_workers(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:2])
    out = extract_files(items, tmp_path / "f.h5", FeatureConfig(sample_rate=16000), workers=0,
                        progress=False)
    store = FeatureStore(out)
    expected = float(store["a.wav"].sum())  # opens the file in the parent before forking
    clone = pickle.loads(pickle.dumps(store))
    assert float(clone["a.wav"].sum()) == expected

    class Clips(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.from_numpy(store[IDS[i % 2]])

    loader = torch.utils.data.DataLoader(Clips(), batch_size=None, num_workers=2)
    got = [float(x.sum()) for x in loader]
    assert got[0] == pytest.approx(expected) and got[2] == pytest.approx(expected)


def test_store_open_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.h5: feature store not found"):
        FeatureStore(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="junk.h5: not a readable HDF5"):
        FeatureStore(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "bare.h5", "w"):
        pass
    with pytest.raises(DataError, match="bare.h5: not a feature store"):
        FeatureStore(tmp_path / "bare.h5")


# --------------------------------------------------------------------------- extraction


def test_extract_features_on_a_data_dir_with_a_pool(tmp_path, rng):
    data = make_data_dir(tmp_path / "data", rng, {"train": IDS[:4], "val": IDS[4:6]})
    cfg = FeatureConfig(sample_rate=16000)
    outputs = extract_features(data, config=cfg, workers=2, progress=False)
    assert outputs == {s: data / "features" / f"{s}.h5" for s in ("train", "val")}
    train = store_contents(outputs["train"])
    assert sorted(train) == sorted(IDS[:4])
    np.testing.assert_array_equal(
        train["c d.wav"], compute_features(data / "audio" / "train" / "c d.wav", cfg)
    )
    # A second run finds everything done and does not touch the file.
    before = outputs["val"].stat().st_mtime_ns
    again = extract_features(data, config=cfg, splits=["val"], workers=2, progress=False)
    assert again["val"] == outputs["val"] and outputs["val"].stat().st_mtime_ns == before


def test_extract_features_needs_manifests(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train.json, val.json or test.json"):
        extract_features(tmp_path / "empty", config=FeatureConfig(), progress=False)
    with pytest.raises(DataError, match="test.json: manifest for split 'test' not found"):
        extract_features(tmp_path / "empty", config=FeatureConfig(), splits=["test"])


def test_unreadable_clip_stops_the_run_and_names_the_file(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:3])
    items[1][1].write_bytes(b"garbage, not audio")
    with pytest.raises(DataError, match=r"b\.wav: not a readable audio file"):
        extract_files(items, tmp_path / "f.h5", FeatureConfig(), workers=0, progress=False)
    assert not (tmp_path / "f.h5").exists()


def test_skip_bad_records_the_skipped_clips(tmp_path, rng, caplog):
    items = write_clips(tmp_path / "audio", rng, IDS[:3])
    items[1][1].write_bytes(b"garbage, not audio")
    out = extract_files(items, tmp_path / "f.h5", FeatureConfig(), workers=0, skip_bad=True,
                        progress=False)
    with FeatureStore(out) as store:
        assert sorted(store.keys()) == ["a.wav", "c d.wav"]
        assert store.skipped == ["b.wav"]
    assert "b.wav" in caplog.text


def test_duplicate_ids_are_rejected(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:2])
    with pytest.raises(DataError, match="'a.wav' appears twice"):
        extract_files(items + items[:1], tmp_path / "f.h5", FeatureConfig(), progress=False)


def test_resume_after_a_failure_gives_the_uninterrupted_result(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS)
    cfg = FeatureConfig(sample_rate=16000)
    reference = extract_files(items, tmp_path / "ref.h5", cfg, workers=0, progress=False)
    good = items[4][1].read_bytes()
    items[4][1].write_bytes(b"not audio")  # the 5th clip fails mid-run
    out = tmp_path / "run.h5"
    with pytest.raises(DataError, match="not a readable audio file"):
        extract_files(items, out, cfg, workers=0, progress=False)
    with h5py.File(partial_path(out), "r") as handle:
        assert len(handle[CLIPS_GROUP]) == 4  # the clips before the failure were kept
    items[4][1].write_bytes(good)
    extract_files(items, out, cfg, workers=2, progress=False)
    assert not partial_path(out).exists()
    assert_same_store(out, reference)


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import acalign.data.features as features

    calls = 0
    real_write_clip = features._write_clip

    def write_then_die(handle, audio_id, feats):
        global calls
        calls += 1
        if calls == int(sys.argv[3]):
            # Die in the middle of a clip: its data is written but not yet moved into /clips.
            name = features.encode_id(audio_id)
            handle.create_dataset(f"{features.WRITING_GROUP}/{name}", data=feats[: len(feats) // 2])
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_write_clip(handle, audio_id, feats)

    features._write_clip = write_then_die
    items = [line.split("\\t") for line in open(sys.argv[1]).read().splitlines()]
    features.extract_files(items, sys.argv[2], features.FeatureConfig(sample_rate=16000),
                           workers=0, progress=False)
    """
)


def test_killed_run_resumes_to_the_identical_result(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS)
    cfg = FeatureConfig(sample_rate=16000)
    reference = extract_files(items, tmp_path / "ref.h5", cfg, workers=0, progress=False)
    listing = tmp_path / "items.tsv"
    listing.write_text("".join(f"{a}\t{p}\n" for a, p in items))
    script = tmp_path / "killed_run.py"
    script.write_text(_KILLED_RUN)
    out = tmp_path / "run.h5"
    proc = subprocess.run([sys.executable, str(script), str(listing), str(out), "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(DataError, match="incomplete"):
        FeatureStore(partial_path(out))
    extract_files(items, out, cfg, workers=0, progress=False)
    assert_same_store(out, reference)
    with h5py.File(out, "r") as handle:
        assert "_writing" not in handle


_KILLED_WRITER = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys
    import acalign.data.features as features

    def record_workers_then_die(handle, audio_id, feats):
        pids = [str(p.pid) for p in multiprocessing.active_children()]
        with open(sys.argv[3], "w") as out:
            out.write(" ".join(pids))
        os.kill(os.getpid(), signal.SIGKILL)

    features._write_clip = record_workers_then_die
    items = [line.split("\\t") for line in open(sys.argv[1]).read().splitlines()]
    features.extract_files(items, sys.argv[2], features.FeatureConfig(sample_rate=16000),
                           workers=2, progress=False)
    """
)


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_writer_is_killed(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS)
    listing = tmp_path / "items.tsv"
    listing.write_text("".join(f"{a}\t{p}\n" for a, p in items))
    script = tmp_path / "killed_writer.py"
    script.write_text(_KILLED_WRITER)
    pids_file = tmp_path / "pids.txt"
    proc = subprocess.run([sys.executable, str(script), str(listing), str(tmp_path / "run.h5"), str(pids_file)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_is_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_is_running(pid) for pid in pids), "feature workers outlived their writer"


def test_an_unreadable_partial_store_is_started_over(tmp_path, rng, caplog):
    items = write_clips(tmp_path / "audio", rng, IDS[:2])
    out = tmp_path / "f.h5"
    partial_path(out).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # torn HDF5 header
    extract_files(items, out, FeatureConfig(), workers=0, progress=False)
    assert sorted(FeatureStore(out).keys()) == ["a.wav", "b.wav"]
    assert "starting it over" in caplog.text


def test_resume_refuses_a_different_config(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:2])
    out = extract_files(items, tmp_path / "f.h5", FeatureConfig(), workers=0, progress=False)
    with pytest.raises(DataError, match="f.h5: exists with a different feature config"):
        extract_files(items, out, FeatureConfig(n_mels=40), workers=0, progress=False)
    replaced = extract_files(items, out, FeatureConfig(n_mels=40), workers=0, overwrite=True,
                             progress=False)
    assert FeatureStore(replaced)["a.wav"].shape[1] == 40


def test_an_existing_store_is_extended_with_new_clips(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:4])
    cfg = FeatureConfig(sample_rate=16000)
    out = extract_files(items[:2], tmp_path / "f.h5", cfg, workers=0, progress=False)
    extract_files(items, out, cfg, workers=0, progress=False)
    assert sorted(FeatureStore(out).keys()) == sorted(IDS[:4])


# --------------------------------------------------------------------------- shards


def test_shards_partition_deterministically(rng):
    items = [(f"id{k:03d}", f"p{k}") for k in rng.permutation(50)]
    shards = [shard_items(items, (i, 3)) for i in range(3)]
    assert sorted(x for s in shards for x in s) == sorted(items)
    assert [len(s) for s in shards] == [17, 17, 16]
    assert shard_items(list(reversed(items)), (1, 3)) == shards[1]
    with pytest.raises(AcalignError, match="shard index must be in"):
        shard_items(items, (3, 3))


def test_shard_then_merge_equals_a_single_run(tmp_path, rng):
    data = make_data_dir(tmp_path / "data", rng, {"train": IDS})
    cfg = FeatureConfig(sample_rate=16000)
    single = extract_features(data, config=cfg, workers=0, progress=False)["train"]
    shards = [
        extract_features(data, config=cfg, workers=0, shard=(i, 3), progress=False)["train"]
        for i in range(3)
    ]
    assert [p.name for p in shards] == [f"train.shard-{i}-of-3.h5" for i in range(3)]
    merged = merge_feature_stores(shards, tmp_path / "merged.h5")
    assert_same_store(merged, single)

    with pytest.raises(DataError, match="missing shard"):
        merge_feature_stores(shards[:2], tmp_path / "m2.h5")
    with pytest.raises(DataError, match="given twice|is also in"):
        merge_feature_stores([*shards, shards[0]], tmp_path / "m3.h5")
    with pytest.raises(DataError, match="already exists"):
        merge_feature_stores(shards, merged)


def test_a_directory_as_store_path_is_refused_before_any_work(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:2])
    store = extract_files(items, tmp_path / "a.h5", FeatureConfig(), workers=0, progress=False)
    folder = tmp_path / "out.h5"
    folder.mkdir()
    with pytest.raises(DataError, match="out.h5: is a directory"):
        extract_files(items, folder, FeatureConfig(), workers=0, progress=False)
    with pytest.raises(DataError, match="out.h5: is a directory"):
        merge_feature_stores([store], folder, overwrite=True)
    assert not any(folder.iterdir()) and not partial_path(folder).exists()


def test_merge_refuses_different_configs(tmp_path, rng):
    items = write_clips(tmp_path / "audio", rng, IDS[:4])
    a = extract_files(items[:2], tmp_path / "a.h5", FeatureConfig(), workers=0, progress=False)
    b = extract_files(items[2:], tmp_path / "b.h5", FeatureConfig(n_mels=32), workers=0,
                      progress=False)
    with pytest.raises(DataError, match="b.h5: feature config differs"):
        merge_feature_stores([a, b], tmp_path / "m.h5")


# --------------------------------------------------------------------------- CLI


def test_cli_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["features", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--splits", "--sample-rate", "--window", "--hop", "--n-mels", "--fmin",
                   "--fmax", "--config", "--workers", "--shard", "--overwrite", "--merge",
                   "--skip-bad"):
        assert option in text


def test_cli_help_defaults_are_feature_config_defaults():
    from acalign.cli.features import _DEFAULTS

    assert {k: to_dict(FeatureConfig())[k] for k in _DEFAULTS} == _DEFAULTS


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, capsys):
    assert main(["features", str(tmp_path / "nowhere")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere: data directory not found" in err
    assert main(["features", str(tmp_path), "--shard", "3/2"]) != 0
    assert "--shard" in capsys.readouterr().err
    assert main(["features", str(tmp_path), "--sample-rate", "8000"]) != 0
    assert "fmax must be ≤ sample_rate/2" in capsys.readouterr().err


def test_cli_extracts_with_yaml_config_then_merges_shards(tmp_path, rng, capsys):
    data = make_data_dir(tmp_path / "data", rng, {"train": IDS[:4]})
    config = tmp_path / "feat.yaml"
    config.write_text("features:\n  sample_rate: 16000\n  n_mels: 40\n")
    for i in range(2):
        code = main(["features", str(data), "--config", str(config), "--hop", "0.01",
                     "--shard", f"{i}/2", "--workers", "0", "--no-progress"])
        assert code == 0
    shards = [str(data / "features" / f"train.shard-{i}-of-2.h5") for i in range(2)]
    out = data / "features" / "train.h5"
    assert main(["features", "merge", str(out), *shards]) == 0
    assert "4 clips merged" in capsys.readouterr().out
    store = FeatureStore(out)
    assert store.config == FeatureConfig(sample_rate=16000, n_mels=40, hop_seconds=0.01)
    assert store["a.wav"].shape[1] == 40
