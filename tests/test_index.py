"""The audio library index: incremental, atomic, two-stage search that agrees with exhaustive."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import faiss
import numpy as np
import pytest
import soundfile as sf
import torch

from acalign.errors import DataError, ModelError
from acalign.infer import index as index_module
from acalign.infer.index import (
    IndexSettings,
    _CaptionScorer,
    build_index,
    chunk_bounds,
    load_index,
    make_faiss_index,
    peak_span,
    recall_at_k,
)
from acalign.infer.model import load_model
from acalign.infer.synthetic import WORDS, save_random_model, scene
from acalign.models.aligner import REDUCTIONS, reduce_similarity
from acalign.models.crnn import CRNNConfig

RATE = 32000


def _write(path: Path, duration: float, events, rng, *, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, scene(duration, events, sample_rate=rate, rng=rng), rate)
    return path


@pytest.fixture
def library(tmp_path: Path, rng) -> Path:
    """Dog clips (known times), bird clips, quiet clips, and a 45 s recording, in sub-folders."""
    lib = tmp_path / "lib"
    _write(lib / "dogs" / "d1.wav", 10, [("dog", 2.0, 4.0)], rng)
    _write(lib / "dogs" / "d2.flac", 10, [("dog", 6.0, 9.0)], rng)
    _write(lib / "dogs" / "d3.wav", 7, [("dog", 1.0, 1.6)], rng, rate=22050)
    _write(lib / "birds" / "b1.wav", 10, [("bird", 1.0, 5.0)], rng)
    _write(lib / "birds" / "b2.ogg", 10, [("bird", 3.0, 4.0)], rng)
    _write(lib / "q1.wav", 10, [], rng)
    _write(lib / "q2.wav", 5, [], rng)
    _write(lib / "long" / "walk.flac", 45, [("bird", 5.0, 8.0), ("dog", 31.0, 33.0)], rng)
    (lib / "notes.txt").write_text("not audio, not indexed")
    return lib


def _ids(hits) -> list[str]:
    return [h.file_id for h in hits]


def test_search_ranks_matching_files_with_their_spans(detector, library: Path, tmp_path: Path) -> None:
    report = build_index(detector, library, tmp_path / "idx")
    assert report.n_files == 8 and report.skipped == [] and report.index_type == "flat"
    assert report.n_chunks == 7 + 5  # 45 s: four 10 s chunks and a 5 s tail (half a chunk)
    index = load_index(tmp_path / "idx")  # the model recorded in the index
    hits = index.search("a dog barks", k=4)
    assert set(_ids(hits)) == {"dogs/d1.wav", "dogs/d2.flac", "dogs/d3.wav", "long/walk.flac"}
    spans = {h.file_id: (h.onset, h.offset) for h in hits}
    expected = {
        "dogs/d1.wav": (2.0, 4.0),
        "dogs/d2.flac": (6.0, 9.0),
        "dogs/d3.wav": (1.0, 1.6),
        "long/walk.flac": (31.0, 33.0),
    }
    for file_id, (onset, offset) in expected.items():
        assert spans[file_id] == pytest.approx((onset, offset), abs=0.21), file_id
    assert hits[0].score > hits[-1].score
    assert _ids(index.search("birds", k=3))[:2] == ["birds/b1.wav", "long/walk.flac"]
    assert Path(hits[0].path).is_file()


def test_incremental_add_change_remove(detector, library: Path, tmp_path: Path, rng) -> None:
    out = tmp_path / "idx"
    build_index(detector, library, out)
    assert build_index(detector, library, out).unchanged == 8  # nothing to do

    _write(library / "dogs" / "new.wav", 10, [("dog", 0.5, 9.5)], rng)
    report = build_index(detector, library, out)
    assert (report.added, report.updated, report.removed, report.unchanged) == (["dogs/new.wav"], [], [], 8)
    assert _ids(load_index(out, detector).search("dog", k=1)) == ["dogs/new.wav"]

    _write(library / "q1.wav", 10, [("dog", 0.0, 10.0)], rng)  # changed content
    os.utime(library / "q1.wav", ns=(1, 1))
    report = build_index(detector, library, out)
    assert report.updated == ["q1.wav"] and report.added == []
    assert _ids(load_index(out, detector).search("dog", k=1)) == ["q1.wav"]

    (library / "q1.wav").unlink()
    (library / "dogs" / "new.wav").unlink()
    report = build_index(detector, library, out)
    assert sorted(report.removed) == ["dogs/new.wav", "q1.wav"]
    index = load_index(out, detector)
    assert len(index) == 7
    assert {"q1.wav", "dogs/new.wav"}.isdisjoint(_ids(index.search("dog", k=10)))


def test_compaction_drops_rows_of_removed_files(detector, library: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(detector, library, out)
    for path in list((library / "long").iterdir()) + list((library / "dogs").iterdir()):
        path.unlink()
    build_index(detector, library, out)
    index = load_index(out, detector)
    stored = sum(c["frames"] for c in index.state["shards"].values())
    assert stored == sum(f.n_frames for f in index.files())
    assert _ids(index.search("bird", k=2)) == ["birds/b1.wav", "birds/b2.ogg"]


def test_unreadable_files_are_skipped_with_a_warning(
    detector, library: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (library / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    sf.write(library / "empty.flac", np.zeros(0, np.float32), RATE)
    with caplog.at_level(logging.WARNING, logger="acalign.infer.index"):
        report = build_index(detector, library, tmp_path / "idx")
    assert sorted(report.skipped) == ["broken.wav", "empty.flac"]
    assert report.n_files == 8
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "broken.wav" in warned and "empty.flac" in warned
    assert "broken.wav" not in _ids(load_index(tmp_path / "idx", detector).files())


def test_interrupted_run_leaves_the_previous_index_usable(
    detector, library: Path, tmp_path: Path, rng, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "idx"
    build_index(detector, library, out)
    before = _ids(load_index(out, detector).search("dog", k=5))
    _write(library / "dogs" / "new.wav", 10, [("dog", 0.0, 10.0)], rng)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "_write_faiss", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(detector, library, out)
    assert _ids(load_index(out, detector).search("dog", k=5)) == before
    monkeypatch.undo()
    report = build_index(detector, library, out)
    assert report.added == ["dogs/new.wav"]
    state = load_index(out, detector).state
    expected = {"index.json", ".lock", state["faiss"]}
    expected |= {f"{kind}-{s}.{ext}" for s in state["shards"] for kind, ext in (("frames", "f16"), ("chunks", "f32"))}
    assert {p.name for p in out.iterdir()} == expected  # the crashed run's files are gone


def test_an_index_refuses_another_model(detector, library: Path, tmp_path: Path) -> None:
    build_index(detector, library, tmp_path / "idx")
    other = load_model(save_random_model(tmp_path / "other", crnn=CRNNConfig(channels=(4,), pools=((2, 64),), gru_hidden=4), dim=8))
    with pytest.raises(ModelError, match="index was built with model"):
        build_index(other, library, tmp_path / "idx")
    with pytest.raises(ModelError, match="index was built with model"):
        load_index(tmp_path / "idx", other)


def test_missing_index_and_folder(detector, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="index folder not found"):
        load_index(tmp_path / "nothing", detector)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an acalign index"):
        load_index(tmp_path / "empty", detector)
    with pytest.raises(DataError, match="audio folder not found"):
        build_index(detector, tmp_path / "no-audio", tmp_path / "idx")


def test_query_by_example_ranks_recordings_holding_the_query_sounds_first(
    detector, library: Path, tmp_path: Path
) -> None:
    """The score is the mean over the query's frames of their best cosine in the candidate:
    a file holding every sound of the query scores 1 (the detector knows only dog, bird and
    background, so all files with a bird tie with the bird clip itself)."""
    build_index(detector, library, tmp_path / "idx")
    index = load_index(tmp_path / "idx", detector)
    hits = index.search_audio(library / "birds" / "b1.wav", k=9)
    top = {h.file_id for h in hits if h.score > 0.99}
    assert top == {"birds/b1.wav", "birds/b2.ogg", "long/walk.flac"}
    assert all(h.score < 0.9 for h in hits if h.file_id not in top)
    wave, rate = sf.read(library / "dogs" / "d2.flac", dtype="float32")
    hits = index.search_audio(wave, sample_rate=rate, k=9)
    assert {h.file_id for h in hits if h.score > 0.99} == {
        "dogs/d1.wav", "dogs/d2.flac", "dogs/d3.wav", "long/walk.flac"
    }


# --------------------------------------------------------------------------- two-stage vs exhaustive


def _random_library(lib: Path, n: int, rng) -> None:
    for i in range(n):
        events = []
        for _ in range(int(rng.integers(0, 3))):
            onset = float(rng.uniform(0, 8))
            events.append((str(rng.choice(["dog", "bird"])), onset, onset + float(rng.uniform(0.2, 3))))
        _write(lib / f"c{i:03d}.wav", float(rng.uniform(3, 10)), events, rng)


def test_two_stage_top10_equals_exhaustive_for_the_detector(detector, tmp_path: Path, rng) -> None:
    _random_library(tmp_path / "lib", 30, rng)
    build_index(detector, tmp_path / "lib", tmp_path / "idx")
    index = load_index(tmp_path / "idx", detector)
    for query in ("dog", "bird", "a dog barks", "birds and dogs"):
        exhaustive = index.search_exhaustive(query, k=10)
        two_stage = index.search(query, k=10, n_candidates=10)  # 10 of 30 chunks per probe
        assert recall_at_k(two_stage, exhaustive, k=10) == 1.0, query
        exact = {h.file_id: h.score for h in exhaustive}
        for hit in two_stage:
            if hit.file_id in exact:
                assert hit.score == pytest.approx(exact[hit.file_id], abs=1e-6)


def test_two_stage_recall_with_an_untrained_crnn(tmp_path: Path, rng) -> None:
    """Random weights make the clamp matter (many negative cosines): candidates from the
    caption's mean and from each word still recover the exhaustive top 10."""
    model = load_model(
        save_random_model(
            tmp_path / "m", crnn=CRNNConfig(channels=(8, 16), pools=((2, 8), (2, 8)), gru_hidden=16), dim=32
        )
    )
    _random_library(tmp_path / "lib", 40, rng)
    build_index(model, tmp_path / "lib", tmp_path / "idx")
    index = load_index(tmp_path / "idx", model)
    queries = [" ".join(pair) for pair in itertools.combinations(list(WORDS), 2)]
    recalls = [
        recall_at_k(index.search(q, k=10, n_candidates=10), index.search_exhaustive(q, k=10), k=10)
        for q in queries
    ]
    assert np.mean(recalls) >= 0.95


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_rerank_scores_are_the_aligner_reductions(reduction: str, rng) -> None:
    lengths = np.array([5, 1, 12, 7])
    frames = rng.standard_normal((lengths.sum(), 6)).astype(np.float32)
    query = rng.standard_normal((3, 6)).astype(np.float32)
    scores, _ = _CaptionScorer(query, reduction=reduction).score(frames, lengths)
    for j, (start, n) in enumerate(zip(np.cumsum(lengths) - lengths, lengths, strict=True)):
        sim = torch.from_numpy(np.maximum(frames[start : start + n] @ query.T, 0))
        expected = reduce_similarity(sim, torch.ones(n, dtype=torch.bool), torch.ones(3, dtype=torch.bool), reduction)
        assert scores[j] == pytest.approx(float(expected), abs=1e-5)


def test_large_libraries_get_an_ivf_index(rng) -> None:
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    index, kind = make_faiss_index(vectors, settings=IndexSettings(flat_max_chunks=500, ivf_nprobe=64))
    assert kind.startswith("ivf") and index.ntotal == 2000
    exact = faiss.IndexFlatIP(16)
    exact.add(vectors)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    assert (index.search(queries, 1)[1] == exact.search(queries, 1)[1]).mean() >= 0.9


def test_chunk_bounds_join_a_short_tail() -> None:
    assert chunk_bounds(50, chunk_frames=50) == [(0, 50)]
    assert chunk_bounds(51, chunk_frames=50) == [(0, 51)]
    assert chunk_bounds(80, chunk_frames=50) == [(0, 50), (50, 80)]
    assert chunk_bounds(3, chunk_frames=50) == [(0, 3)]


def test_peak_span_is_the_half_height_region_around_the_peak() -> None:
    activation = np.array([0.0, 0.1, 0.6, 0.9, 0.7, 0.2, 0.8, 0.0])
    assert peak_span(activation) == (3, 5)  # median 0.4, half way to 0.9 is 0.65
    assert peak_span(np.full(6, 0.3)) == (0, 6)


def test_out_that_is_a_file_is_a_data_error(detector, library: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("keep me")
    with pytest.raises(DataError, match="taken: exists and is not a directory"):
        build_index(detector, library, tmp_path / "taken")
    with pytest.raises(DataError, match="taken: exists and is not a directory"):
        build_index(detector, library, tmp_path / "taken" / "idx")
    assert (tmp_path / "taken").read_text() == "keep me"


def test_a_file_given_as_the_audio_folder_is_named_as_a_file(detector, tmp_path: Path) -> None:
    (tmp_path / "one.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match="one.wav: is a file; give the folder"):
        build_index(detector, tmp_path / "one.wav", tmp_path / "idx")


def _shard_of(out: Path, file_id: str) -> str:
    return next(f.shard for f in load_index(out).files() if f.file_id == file_id)


@pytest.mark.parametrize("damage", ["delete frames", "truncate chunks"])
def test_rerun_repairs_a_damaged_shard_and_keeps_the_rest(
    damage: str, detector, library: Path, tmp_path: Path, rng
) -> None:
    out = tmp_path / "idx"
    build_index(detector, library, out)
    _write(library / "dogs" / "new.wav", 10, [("dog", 0.5, 9.5)], rng)
    build_index(detector, library, out)  # a second shard holding only new.wav
    before = [(h.file_id, h.score) for h in load_index(out, detector).search("dog", k=9)]
    first, second = _shard_of(out, "q1.wav"), _shard_of(out, "dogs/new.wav")
    if damage == "delete frames":
        (out / f"frames-{first}.f16").unlink()
        with pytest.raises(DataError, match=f"frames-{first}.f16: index data file missing .* acalign index"):
            load_index(out, detector)
    else:
        with open(out / f"chunks-{first}.f32", "r+b") as handle:
            handle.truncate(100)

    report = build_index(detector, library, out)
    assert sorted(report.repaired) == sorted(set(_ids(load_index(out, detector).files())) - {"dogs/new.wav"})
    assert (report.unchanged, report.added, report.updated, report.removed) == (1, [], [], [])
    assert _shard_of(out, "dogs/new.wav") == second  # the intact shard is reused as it is
    after = [(h.file_id, h.score) for h in load_index(out, detector).search("dog", k=9)]
    assert [f for f, _ in after] == [f for f, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-6)
    assert not (out / f"chunks-{first}.f32").exists()  # the damaged shard's leftovers are gone
    assert build_index(detector, library, out).unchanged == 9


def test_missing_faiss_file_names_the_repair(detector, library: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(detector, library, out)
    faiss_file = out / load_index(out, detector).state["faiss"]
    faiss_file.unlink()
    with pytest.raises(DataError, match=f"{faiss_file.name}: FAISS index missing .* --out"):
        load_index(out, detector)
    build_index(detector, library, out)
    assert _ids(load_index(out, detector).search("dog", k=1))
