"""Evaluation: metrics from arrays, report and comparison, and a tiny exported run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from acalign.errors import AcalignError, ModelError
from acalign.evaluate import (
    choose_postprocessing,
    evaluate_run,
    evaluate_scores,
    score_split,
    write_comparison_report,
    write_metrics,
    write_report,
)
from acalign.metrics import PhraseActivation, random_scores
from acalign.postprocess import segments_to_frame_labels

FRAME_RATE = 10.0


def _perfect_arrays(rng, n_audio=32, per_clip=2, n_frames=80):
    caption_to_audio = np.repeat(np.arange(n_audio), per_clip)
    similarity = (np.arange(n_audio)[:, None] == caption_to_audio[None, :]).astype(float)
    pairs = []
    for c in range(len(caption_to_audio)):
        onset = float(rng.uniform(0.5, 5.0))
        segments = ((onset, onset + 1.5),)
        labels = segments_to_frame_labels(segments, n_frames=n_frames, frame_rate=FRAME_RATE)
        pairs.append(PhraseActivation(f"p{c}", 0.1 + 0.8 * labels, segments))
        pairs.append(PhraseActivation(f"u{c}", np.full(n_frames, 0.5), ((0.0, 0.0),), annotated=False))
    return similarity, caption_to_audio, pairs


def _results(rng):
    similarity, caption_to_audio, pairs = _perfect_arrays(rng)
    model = evaluate_scores(
        similarity=similarity, caption_to_audio=caption_to_audio, pairs=pairs,
        frame_rate=FRAME_RATE, threshold=0.5, median_filter_frames=1,
    )
    drawn = random_scores(
        n_audio=similarity.shape[0], n_captions=similarity.shape[1], n_frames=[len(p.activation) for p in pairs], seed=0
    )
    random_pairs = [PhraseActivation(p.pair_id, a, p.segments, p.annotated) for p, a in zip(pairs, drawn.activations, strict=True)]
    floor = evaluate_scores(
        similarity=drawn.similarity, caption_to_audio=caption_to_audio, pairs=random_pairs,
        frame_rate=FRAME_RATE, threshold=0.5, median_filter_frames=1,
    )
    post = {"threshold": 0.5, "median_filter_frames": 1, "chosen_on": "val"}
    return {
        "split": "test",
        "retrieval": model["retrieval"],
        "sed": model["sed"],
        "postprocessing": post,
        "random_baseline": {"retrieval": floor["retrieval"], "sed": floor["sed"], "postprocessing": post},
        "counts": model["counts"],
    }


def test_evaluate_scores_perfect_model(rng):
    results = _results(rng)
    for direction in ("text_to_audio", "audio_to_text"):
        assert results["retrieval"][direction] == pytest.approx({"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP@10": 1.0})
        assert results["retrieval"]["paper_protocol"][direction]["R@1"]["mean"] == 1.0
    assert results["retrieval"]["paper_protocol"]["n_candidates"] == 30
    assert results["sed"]["frame_auc"] == 1.0
    assert results["sed"]["event_f1"] == 1.0
    assert results["sed"]["psds"] > 0.99
    assert results["counts"] == {
        "clips": 32, "captions": 64, "phrases": 128, "phrases_scored": 64, "phrases_unannotated": 64,
    }
    floor = results["random_baseline"]
    assert floor["retrieval"]["text_to_audio"]["R@1"] < 0.3
    assert floor["sed"]["psds"] < 0.2
    for value in (*floor["sed"].values(), *results["sed"].values()):
        assert 0.0 <= value <= 1.0


def test_report_has_every_table_with_random(rng, tmp_path):
    path = write_report(_results(rng), tmp_path / "report.md", title="tiny")
    text = path.read_text()
    assert text.startswith("# tiny")
    for row in ("| text→audio | model |", "| text→audio | random |", "| audio→text | random |", "| random |"):
        assert row in text
    assert "paper protocol" in text and "30 candidates" in text
    assert "64 of 128 phrase pairs are not annotated" in text
    assert "1.000 ± 0.000" in text


def test_metrics_json_writes_nan_as_null(tmp_path):
    write_metrics({"sed": {"frame_auc": float("nan"), "psds": np.float64(0.25)}, "n": np.int64(3)}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"sed": {"frame_auc": None, "psds": 0.25}, "n": 3}


def _write_run_metrics(run_dir: Path, results: dict, psds: float) -> Path:
    results = json.loads(json.dumps(results))
    results["sed"]["psds"] = psds
    write_metrics(results, run_dir / "metrics.json")
    return run_dir


def test_comparison_report_side_by_side_with_psds_ratio(rng, tmp_path):
    results = _results(rng)
    runs = {
        name: _write_run_metrics(tmp_path / name, results, psds)
        for name, psds in (("paper", 0.15), ("default", 0.3), ("supervised", 0.6))
    }
    text = write_comparison_report(runs, tmp_path / "report.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert list(rows)[1:] == ["paper", "default", "supervised", "random"]
    assert rows["default"].rstrip(" |").endswith("0.50")  # 0.3 / 0.6
    assert rows["paper"].rstrip(" |").endswith("0.25")
    assert "supervised upper bound" in text


def test_comparison_report_names_a_missing_metrics_file(tmp_path):
    with pytest.raises(AcalignError, match=r"nope[/\\]metrics.json: metrics not found"):
        write_comparison_report({"x": tmp_path / "nope"}, tmp_path / "report.md")


# --------------------------------------------------------------------------- a tiny exported run

WORDS = ["a", "dog", "barks", "while", "wind", "blows"]


def _write_store(path: Path, config, clips: dict[str, np.ndarray]) -> None:
    import h5py

    from acalign.data.features import CLIPS_GROUP, COMPLETE_ATTR, CONFIG_ATTR, encode_id

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.attrs[CONFIG_ATTR] = config.to_json()
        handle.attrs[COMPLETE_ATTR] = True
        group = handle.create_group(CLIPS_GROUP)
        for audio_id, features in clips.items():
            group.create_dataset(encode_id(audio_id), data=features)


def _tiny_split(data_dir: Path, split: str, config, rng, n_clips: int = 6) -> None:
    from acalign.data.manifest import Caption, Clip, Manifest, Phrase, Segment, write_manifest

    clips, features = [], {}
    for i in range(n_clips):
        audio_id = f"{split}_{i}.wav"
        features[audio_id] = rng.normal(size=(40 + 5 * (i % 3), config.n_mels)).astype(np.float32)
        captions = []
        for k in range(2):
            onset = float(rng.uniform(0.0, 2.0))
            captions.append(
                Caption(
                    f"{audio_id}-{k}", " ".join(WORDS), list(WORDS),
                    [
                        Phrase("a dog barks", 0, 2, [Segment(onset, onset + 1.0)]),
                        Phrase("wind blows", 4, 5, [Segment(0.0, 0.0)], annotated=False),
                    ],
                )
            )
        clips.append(Clip(audio_id, captions))
    write_manifest(Manifest(clips), data_dir / f"{split}.json")
    _write_store(data_dir / "features" / f"{split}.h5", config, features)


@pytest.fixture
def tiny_run(tmp_path, rng):
    """A randomly initialised tiny aligner exported into RUN/model, and a data dir with val/test."""
    import torch

    from acalign.data.captions import Vocabulary
    from acalign.data.features import FeatureConfig
    from acalign.models.aligner import Aligner, AlignerConfig
    from acalign.models.crnn import CRNNConfig
    from acalign.models.export import save_exported
    from acalign.text.learned import LearnedEmbeddingEncoder

    torch.manual_seed(0)
    feature_config = FeatureConfig(n_mels=16)
    data_dir = tmp_path / "data"
    for split in ("val", "test"):
        _tiny_split(data_dir, split, feature_config, rng)
    config = AlignerConfig(audio=CRNNConfig(n_mels=16, channels=(4, 4), pools=((2, 4), (2, 4)), gru_hidden=8))
    aligner = Aligner(config, text_encoder=LearnedEmbeddingEncoder(Vocabulary(WORDS), dim=16))
    run_dir = tmp_path / "run"
    save_exported(aligner, run_dir / "model", feature_config=feature_config)
    log_dir = run_dir / "logs" / "version_0"
    log_dir.mkdir(parents=True)
    (log_dir / "metrics.csv").write_text("epoch,step,train_loss,val_loss\n0,4,1.0,\n0,4,,0.9\n1,9,0.8,\n1,9,,0.7\n")
    return run_dir, data_dir


def test_score_split_batches_do_not_change_scores(tiny_run):
    import torch

    from acalign.data.dataset import pad_features
    from acalign.data.features import FeatureStore
    from acalign.data.manifest import read_manifest
    from acalign.models.export import load_exported

    run_dir, data_dir = tiny_run
    aligner, _ = load_exported(run_dir / "model")
    manifest = read_manifest(data_dir / "test.json")
    with FeatureStore(data_dir / "features" / "test.h5") as store:
        small = score_split(aligner, manifest, store, batch_size=2)
        large = score_split(aligner, manifest, store, batch_size=100)
        feats = [torch.from_numpy(store[c.audio_id]) for c in manifest.clips]
        padded, lengths, _ = pad_features(feats, pad_value=store.config.pad_value)
    np.testing.assert_allclose(small.similarity, large.similarity, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        a, a_mask = aligner.encode_audio(padded, lengths)
        q, q_mask = aligner.encode_text([cap.tokens for _, cap in manifest.captions()])
        direct = aligner.score_matrix(a, a_mask, q, q_mask).double().numpy()
        sim = aligner.frame_word_similarity(a[:1, : int(lengths[0])], q[:1])[0]
        first_phrase = aligner.phrase_activation(sim, slice(0, 3)).double().numpy()
    np.testing.assert_allclose(small.similarity, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(small.pairs[0].activation, first_phrase, rtol=1e-5, atol=1e-6)
    assert len(small.pairs) == 24 and small.caption_to_audio.tolist() == np.repeat(np.arange(6), 2).tolist()


def test_evaluate_run_end_to_end(tiny_run):
    from acalign.data.features import FeatureStore
    from acalign.data.manifest import read_manifest
    from acalign.models.export import load_exported

    run_dir, data_dir = tiny_run
    results = evaluate_run(run_dir, data_dir, split="test", val_split="val", batch_size=4, gallery=2)
    written = json.loads((run_dir / "metrics.json").read_text())
    assert set(written) >= {"retrieval", "sed", "random_baseline", "counts", "postprocessing"}
    for part in (written, written["random_baseline"]):
        assert set(part["retrieval"]) == {"text_to_audio", "audio_to_text", "paper_protocol"}
        assert set(part["retrieval"]["text_to_audio"]) == {"R@1", "R@5", "R@10", "mAP@10"}
        assert {"frame_auc", "psds", "event_f1"} <= set(part["sed"])
        assert all(v is None or 0.0 <= v <= 1.0 for v in part["sed"].values())
    assert written["counts"] == {"clips": 6, "captions": 12, "phrases": 24, "phrases_scored": 12, "phrases_unannotated": 12}
    assert written["retrieval"]["paper_protocol"]["n_candidates"] == 6

    # The threshold comes from the validation split and is stored for grounding.
    aligner, meta = load_exported(run_dir / "model")
    with FeatureStore(data_dir / "features" / "val.h5") as store:
        val = score_split(aligner, read_manifest(data_dir / "val.json"), store, with_similarity=False)
    expected = choose_postprocessing(val.pairs, frame_rate=val.frame_rate)
    assert written["postprocessing"]["chosen_on"] == "val"
    assert written["postprocessing"]["threshold"] == pytest.approx(min(1.0, max(0.0, expected["threshold"])))
    assert meta.inference.threshold == pytest.approx(written["postprocessing"]["threshold"])
    assert meta.inference.median_filter == written["postprocessing"]["median_filter_frames"]

    report = (run_dir / "report.md").read_text()
    assert "| text→audio | random |" in report and "left out of every SED metric" in report
    names = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert names == [
        "gallery_00.png", "gallery_01.png", "prf_threshold.png",
        "similarity_00.png", "similarity_01.png", "training_curves.png",
    ]
    assert results["plots"] == [f"plots/{n}" for n in ("gallery_00.png", "gallery_01.png", "similarity_00.png", "similarity_01.png", "prf_threshold.png", "training_curves.png")]
    assert not math.isnan(results["sed"]["frame_auc"])


def test_cli_evaluate_and_compare(tiny_run, capsys):
    from acalign.cli import main

    run_dir, data_dir = tiny_run
    code = main(["evaluate", str(run_dir), "--data", str(data_dir), "--gallery", "1", "--compare", f"supervised={run_dir}"])
    assert code == 0
    assert "text->audio R@1" in capsys.readouterr().out
    assert (run_dir / "metrics.json").is_file() and (run_dir / "plots" / "gallery_00.png").is_file()
    comparison = (run_dir / "comparison.md").read_text()
    assert "| run |" in comparison and "| supervised |" in comparison and "| random |" in comparison


def test_cli_missing_model_is_one_line_error(tmp_path, capsys):
    from acalign.cli import main

    code = main(["evaluate", str(tmp_path / "nothing"), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "exported model directory not found" in err


def test_cli_bad_compare_argument(tmp_path, capsys):
    from acalign.cli import main

    assert main(["evaluate", str(tmp_path), "--data", str(tmp_path), "--compare", "no-equals-sign"]) == 2
    assert "NAME=RUN_DIR" in capsys.readouterr().err


def test_threshold_split_must_differ(tiny_run):
    run_dir, data_dir = tiny_run
    with pytest.raises(AcalignError, match="another split"):
        evaluate_run(run_dir, data_dir, split="test", val_split="test")


def test_feature_config_mismatch_is_a_model_error(tiny_run):
    from acalign.data.features import FeatureConfig

    run_dir, data_dir = tiny_run
    _write_store(data_dir / "features" / "test.h5", FeatureConfig(n_mels=16, hop_seconds=0.01), {})
    with pytest.raises(ModelError, match="expects"):
        evaluate_run(run_dir, data_dir, split="test", val_split=None)


def test_missing_feature_store_names_the_file(tiny_run):
    from acalign.errors import DataError

    run_dir, data_dir = tiny_run
    (data_dir / "features" / "test.h5").unlink()
    with pytest.raises(DataError, match=r"test\.h5: feature store not found"):
        evaluate_run(run_dir, data_dir, split="test", val_split=None)


def _cli_error_before_work(run_dir, argv, capsys) -> str:
    """Run ``acalign evaluate`` expecting a one-line error and nothing evaluated or written."""
    from acalign.cli import main

    inference = (run_dir / "model" / "inference.json").read_text()
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("acalign evaluate: error: ")
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "plots").exists()
    assert (run_dir / "model" / "inference.json").read_text() == inference
    return err


def test_cli_compare_missing_run_fails_before_evaluating(tiny_run, tmp_path, capsys):
    run_dir, data_dir = tiny_run
    missing = tmp_path / "nonexistent"
    err = _cli_error_before_work(run_dir, [str(run_dir), "--data", str(data_dir), "--compare", f"x={missing}"], capsys)
    assert f"--compare x={missing}: run folder {missing} not found" in err


def test_cli_compare_unevaluated_run_fails_before_evaluating(tiny_run, tmp_path, capsys):
    run_dir, data_dir = tiny_run
    other = tmp_path / "other"
    other.mkdir()
    err = _cli_error_before_work(run_dir, [str(run_dir), "--data", str(data_dir), "--compare", f"x={other}"], capsys)
    assert "metrics.json: metrics not found" in err


def test_cli_compare_repeated_name_fails_before_evaluating(tiny_run, capsys):
    run_dir, data_dir = tiny_run
    argv = [str(run_dir), "--data", str(data_dir), "--compare", f"a={run_dir}", f"a={run_dir}"]
    assert "the name 'a' is already taken" in _cli_error_before_work(run_dir, argv, capsys)
    argv = [str(run_dir), "--data", str(data_dir), "--compare", f"run={data_dir}"]
    assert "the name 'run' is already taken" in _cli_error_before_work(run_dir, argv, capsys)


def test_cli_bad_inference_value_is_one_line(tiny_run, capsys):
    run_dir, data_dir = tiny_run
    (run_dir / "model" / "inference.json").write_text(json.dumps({"threshold": "x"}))
    err = _cli_error_before_work(run_dir, [str(run_dir), "--data", str(data_dir)], capsys)
    assert "inference.json: threshold must be a number, got 'x'" in err
