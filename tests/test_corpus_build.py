"""The corpus builder end to end, on a tiny generated sound library (the --library path)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acalign.cli import main
from acalign.data.corpus import build_config, build_corpus
from acalign.data.corpus.sources import Recording
from acalign.data.corpus.splits import assign_splits
from acalign.data.manifest import read_manifest
from acalign.errors import AcalignError

SR = 32000
FRAME = 160  # the builder's 5 ms trimming frame at 32 kHz: whole frames keep extents exact


def _burst(rng: np.random.Generator, frames: int) -> np.ndarray:
    """White noise with a sharp start and end (no silent head or tail): a sharp correlation peak."""
    return np.clip(0.2 * rng.standard_normal(frames * FRAME), -0.9, 0.9).astype(np.float32)


def _make_library(root: Path, *, with_background: bool = False) -> tuple[Path, Path]:
    """Three event classes of noise bursts, 3 families x 2 takes each; optional background."""
    rng = np.random.default_rng(1234)
    folder = root / "library"
    rows = []
    for label in ("beep", "dog", "siren whine"):
        for family in range(3):
            for take in range(2):
                name = f"{label.replace(' ', '_')}/{label.replace(' ', '_')}_{family}{take}.wav"
                audio = _burst(rng, int(rng.integers(40, 200)))
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                sf.write(folder / name, audio, SR, subtype="FLOAT")
                rows.append({"file": name, "label": label, "family": f"{label}{family}", "licence": "CC0"})
    if with_background:
        for i in range(3):
            name = f"hum/hum_{i}.wav"
            audio = (0.2 * np.sin(2 * np.pi * (120 + 10 * i) * np.arange(3 * SR) / SR)).astype(np.float32)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / name, audio, SR, subtype="FLOAT")
            rows.append({"file": name, "label": "hum", "family": f"hum{i}", "licence": "CC0", "role": "background"})
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "family", "licence", "role"])
        writer.writeheader()
        writer.writerows(rows)
    return folder, labels


def _build(root: Path, out: Path, *, seed: int = 0, workers: int = 1, background: bool = False, **kw):
    folder, labels = _make_library(root, with_background=background)
    settings = {"snr_db": [10.0, 12.0], "distant_prob": 0.0, "repeat_class_prob": 0.0, **kw}
    config = build_config(
        clips=settings.pop("clips", (12, 4, 4)), seed=seed, packages=[], speech=False,
        library=str(folder), labels=str(labels), min_recordings=1, **settings,
    )
    return build_corpus(config, out, cache=root / "cache", workers=workers, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    _build(root, root / "corpus", clips=(16, 4, 4))
    return root / "corpus"


def _events(corpus: Path, split: str) -> list[dict]:
    return json.loads((corpus / "events" / f"{split}.json").read_text())


def test_writes_the_data_directory_contract(corpus: Path) -> None:
    for split, n in (("train", 16), ("val", 4), ("test", 4)):
        manifest = read_manifest(corpus / f"{split}.json")
        manifest.validate(corpus / "audio" / split)
        assert len(manifest) == n
        assert all(clip.duration == 10.0 for clip in manifest)
        expected = 1 if split == "train" else 5
        assert all(len(clip.captions) == expected for clip in manifest)
        if split != "train":
            assert all(len({c.text for c in clip.captions}) == 5 for clip in manifest)
    info = sf.info(corpus / "audio" / "train" / "train_00000.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, 10 * SR, "PCM_16")
    for name in ("catalogue.csv", "SOURCES.md", "stats.json", "corpus.yaml"):
        assert (corpus / name).is_file()


def test_energy_is_inside_the_labelled_segments(corpus: Path) -> None:
    for split in ("train", "val", "test"):
        for meta in _events(corpus, split):
            audio, sr = sf.read(corpus / "audio" / split / meta["audio_id"], dtype="float64")
            inside = np.zeros(len(audio), dtype=bool)
            for event in meta["events"]:
                inside[round(event["onset"] * sr) : round(event["offset"] * sr)] = True
            assert inside.any()
            rms_in = np.sqrt(np.mean(audio[inside] ** 2))
            rms_out = np.sqrt(np.mean(audio[~inside] ** 2)) if (~inside).any() else 0.0
            assert rms_in > 30 * max(rms_out, 1e-6), meta["audio_id"]


def _correlation(audio: np.ndarray, source: np.ndarray, lag: int) -> float:
    """Normalised correlation of ``source`` with ``audio`` starting at sample ``lag``."""
    window = audio[lag : lag + len(source)]
    return float(window @ source / (np.linalg.norm(window) * np.linalg.norm(source) + 1e-12))


def test_event_samples_sit_where_the_manifest_says(corpus: Path, tmp_path: Path) -> None:
    folder = corpus.parent / "library"
    checked = 0
    for split in ("train", "val", "test"):
        for meta in _events(corpus, split):
            audio, sr = sf.read(corpus / "audio" / split / meta["audio_id"], dtype="float64")
            for event in meta["events"]:
                (recording,) = event["recordings"]
                source, _ = sf.read(folder / recording.removeprefix("library/"), dtype="float64")
                onset = round(event["onset"] * sr)
                assert round(event["offset"] * sr) - onset == len(source)

                exact = _correlation(audio, source, onset)
                shifts = [d for d in (-10, -3, -2, -1, 1, 2, 3, 10) if 0 <= onset + d <= len(audio) - len(source)]
                nearby = max(abs(_correlation(audio, source, onset + d)) for d in shifts)
                assert exact > 0.4 and exact > 5 * nearby, meta["audio_id"]
                checked += 1
    assert checked >= 24


def test_manifest_phrases_carry_the_event_segments(corpus: Path) -> None:
    for split in ("train", "test"):
        metas = {m["audio_id"]: m for m in _events(corpus, split)}
        for clip, caption in read_manifest(corpus / f"{split}.json").captions():
            segments = sorted((round(e["onset"], 3), round(e["offset"], 3)) for e in metas[clip.audio_id]["events"])
            phrase_segments = sorted((s.onset, s.offset) for p in caption.phrases for s in p.segments)
            assert phrase_segments == segments
            for phrase in caption.phrases:
                assert caption.tokens[phrase.span] == phrase.text.split()


def test_families_never_cross_splits(corpus: Path) -> None:
    family_splits: dict[str, set[str]] = {}
    with (corpus / "catalogue.csv").open() as handle:
        family_of = {row["recording_id"]: row["family"] for row in csv.DictReader(handle)}
    for split in ("train", "val", "test"):
        for meta in _events(corpus, split):
            for event in meta["events"]:
                for rec in event["recordings"]:
                    family_splits.setdefault(family_of[rec], set()).add(split)
    assert family_splits and all(len(s) == 1 for s in family_splits.values())
    used_splits = set().union(*family_splits.values())
    assert used_splits == {"train", "val", "test"}


def _digest(folder: Path) -> dict[str, str]:
    files = sorted([*folder.glob("*.json"), *folder.glob("audio/*/*.wav"), *folder.glob("events/*.json")])
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_identical_bytes_whatever_the_workers(corpus: Path, tmp_path: Path) -> None:
    _build(tmp_path, tmp_path / "again", clips=(16, 4, 4), workers=2)
    first = {k: v for k, v in _digest(corpus).items() if not k.startswith(("stats", "build_info"))}
    second = {k: v for k, v in _digest(tmp_path / "again").items() if not k.startswith(("stats", "build_info"))}
    assert first == second
    _build(tmp_path, tmp_path / "other", clips=(16, 4, 4), seed=1)
    assert _digest(tmp_path / "other")["train.json"] != first["train.json"]


def test_rerun_reuses_clips_and_refuses_other_settings(tmp_path: Path) -> None:
    _build(tmp_path, tmp_path / "c", clips=(4, 2, 2))
    wav = tmp_path / "c" / "audio" / "train" / "train_00000.wav"
    stamp = wav.stat().st_mtime_ns
    _build(tmp_path, tmp_path / "c", clips=(4, 2, 2))
    assert wav.stat().st_mtime_ns == stamp
    with pytest.raises(AcalignError, match="other settings"):
        _build(tmp_path, tmp_path / "c", clips=(4, 2, 2), seed=5)
    labels = tmp_path / "labels.csv"
    labels.write_text(labels.read_text().replace(",dog,", ",cat,"))  # other sources, same settings
    folder = tmp_path / "library"
    config = build_config(clips=(4, 2, 2), packages=[], speech=False, library=str(folder), labels=str(labels),
                          min_recordings=1, snr_db=[10.0, 12.0], distant_prob=0.0, repeat_class_prob=0.0)
    build_corpus(config, tmp_path / "c", cache=tmp_path / "cache", workers=1, progress=False)
    assert wav.stat().st_mtime_ns != stamp
    events = json.loads((tmp_path / "c" / "events" / "train.json").read_text())
    assert "dog_wolf" not in {e["label"] for m in events for e in m["events"]}


def test_background_is_mentioned_over_the_whole_clip(tmp_path: Path) -> None:
    _build(tmp_path, tmp_path / "bg", clips=(30, 3, 3), background=True, background_prob=1.0,
           background_mention_prob=1.0)
    manifest = read_manifest(tmp_path / "bg" / "train.json")
    metas = {m["audio_id"]: m for m in _events(tmp_path / "bg", "train")}
    mentioned = 0
    for clip, caption in manifest.captions():
        assert metas[clip.audio_id]["background"]["label"] == "hum"
        whole = [p for p in caption.phrases if [(s.onset, s.offset) for s in p.segments] == [(0.0, 10.0)]]
        mentioned += len(whole)
        for phrase in whole:
            assert "hum" in phrase.text
    assert mentioned > 5


def test_assign_splits_by_family_count() -> None:
    def recs(label: str, families: int, per_family: int = 2) -> list[Recording]:
        return [
            Recording(f"{label}/{f}_{i}", label, f"{label}:{f}", "p", "1", "x", f"{f}_{i}", "", 1.0)
            for f in range(families) for i in range(per_family)
        ]

    recordings = recs("many", 7) + recs("two", 2) + recs("one", 1)
    split_of = assign_splits(recordings, seed=3)
    by_label: dict[str, set[str]] = {}
    for rec in recordings:
        by_label.setdefault(rec.label, set()).add(split_of[rec.family])
    assert by_label == {"many": {"train", "val", "test"}, "two": {"train", "test"}, "one": {"train"}}
    many = [split_of[r.family] for r in recordings if r.label == "many"]
    assert many.count("train") > many.count("val")


def test_cli_builds_from_a_library(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, labels = _make_library(tmp_path)
    code = main([
        "corpus", "build", "--out", str(tmp_path / "cli"), "--library", str(folder), "--labels", str(labels),
        "--clips", "3,2,2", "--min-recordings", "1", "--cache", str(tmp_path / "cache"), "--workers", "1",
        "--no-progress",
    ])
    assert code == 0
    assert "train" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "cli" / "val.json")) == 2


def test_undecodable_files_are_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, labels = _make_library(tmp_path)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    labels.write_text(labels.read_text() + "broken.wav,beep,beepX,CC0,event\n")
    config = build_config(clips=(2, 1, 1), packages=[], speech=False, library=str(folder),
                          labels=str(labels), min_recordings=1)
    result = build_corpus(config, tmp_path / "c", cache=tmp_path / "cache", workers=1, progress=False)
    assert "cannot be decoded" in caplog.text and "broken.wav" in caplog.text
    assert "broken.wav" not in (tmp_path / "c" / "catalogue.csv").read_text()
    assert result.stats["n_recordings"] == 18


def test_cli_reports_bad_labels_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, labels = _make_library(tmp_path)
    labels.write_text("file,label\nmissing.wav,dog\n")
    code = main(["corpus", "build", "--out", str(tmp_path / "x"), "--library", str(folder), "--labels",
                 str(labels), "--cache", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "labels.csv: line 2" in err and "missing.wav" in err


def test_without_apt_the_error_points_to_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import acalign.data.corpus.apt as sources

    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    config = build_config(size="tiny", packages=["minetest-data"], speech=False)
    with pytest.raises(AcalignError, match="--library") as info:
        build_corpus(config, tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert "apt-get" in str(info.value) and "\n" not in str(info.value)


def test_an_out_path_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    from acalign.errors import AcalignError

    blocker = tmp_path / "corpus.txt"
    blocker.write_text("keep me")
    with pytest.raises(AcalignError, match="corpus.txt: exists and is not a directory"):
        build_corpus(build_config(size="tiny"), blocker, cache=tmp_path / "cache")
    assert blocker.read_text() == "keep me" and not (tmp_path / "cache").exists()


def test_a_seed_numpy_refuses_is_a_one_line_error_before_any_work(tmp_path: Path) -> None:
    from acalign.errors import AcalignError

    with pytest.raises(AcalignError, match=r"seed must be in \[0, 4294967295\], got -1"):
        build_corpus(build_config(size="tiny", seed=-1), tmp_path / "corpus", cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
