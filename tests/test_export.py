"""Exported model directories: identical reload, what is stored, clear errors on bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from acalign.data.captions import Vocabulary
from acalign.data.features import FeatureConfig
from acalign.errors import ModelError
from acalign.models.aligner import Aligner, AlignerConfig
from acalign.models.crnn import CRNNConfig
from acalign.models.export import (
    FORMAT_VERSION,
    InferenceConfig,
    load_exported,
    read_meta,
    save_exported,
    update_inference,
)
from acalign.text import build_text_encoder

FEATURES = FeatureConfig(n_mels=16)
CAPTIONS = [["a", "dog", "barks"], ["water", "flows", "slowly", "nearby"], ["a", "bird", "sings"]]


def tiny_aligner(text_spec: dict, *, vocabulary: Vocabulary | None = None, seed: int = 0) -> Aligner:
    torch.manual_seed(seed)
    audio = CRNNConfig(n_mels=16, channels=(4, 8), pools=((2, 4), (2, 4)), gru_hidden=8)
    encoder = build_text_encoder(text_spec, vocabulary=vocabulary or Vocabulary.build(CAPTIONS))
    return Aligner(AlignerConfig(audio=audio, text=text_spec, reduction="max_time_mean_words"), text_encoder=encoder)


def _scores(aligner: Aligner, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    aligner.eval()
    with torch.no_grad():
        a, am = aligner.encode_audio(feats, lengths)
        q, qm = aligner.encode_text(CAPTIONS)
        return aligner.score_matrix(a, am, q, qm)


@pytest.fixture
def inputs(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.from_numpy(rng.normal(-10, 3, size=(3, 40, 16)).astype(np.float32))
    return feats, torch.tensor([40, 31, 17])


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Aligner, Path]:
    aligner = tiny_aligner({"kind": "learned", "dim": 16})
    return aligner, save_exported(aligner, tmp_path / "model", feature_config=FEATURES, extra={"run": "t"})


def test_learned_encoder_round_trip_gives_identical_scores(
    exported: tuple[Aligner, Path], inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    original, path = exported
    loaded, meta = load_exported(path)
    assert not loaded.training
    torch.testing.assert_close(_scores(loaded, *inputs), _scores(original, *inputs), atol=1e-6, rtol=0)
    assert meta.format_version == FORMAT_VERSION
    assert meta.feature_config == FEATURES
    assert meta.inference == InferenceConfig(threshold=0.5, median_filter=1)
    assert meta.extra == {"run": "t"}
    assert meta.text_encoder["kind"] == "learned" and "dog" in meta.text_encoder["words"]
    assert loaded.config.audio.channels == (4, 8)
    umask = os.umask(0)
    os.umask(umask)
    assert (path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_word2vec_vectors_are_stored_restricted_and_reload_without_the_file(
    tmp_path: Path, inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    source = tmp_path / "vectors.txt"
    rows = ["dog 1 0 0 0", "barks 0 1 0 0", "water 0 0 1 0", "unrelated 1 1 1 1", "sings 0 0 0 1"]
    source.write_text(f"{len(rows)} 4\n" + "\n".join(rows) + "\n")
    vocabulary = Vocabulary.build(CAPTIONS)
    original = tiny_aligner({"kind": "word2vec", "path": str(source)}, vocabulary=vocabulary)
    path = save_exported(original, tmp_path / "model", feature_config=FEATURES)
    source.unlink()  # the export must not need the original file
    stored = load_file(str(path / "model.safetensors"))
    tables = [v for k, v in stored.items() if k.startswith("text_encoder.")]
    assert len(tables) == 1 and tables[0].shape == (len(vocabulary), 4)  # training words only
    loaded, _ = load_exported(path)
    torch.testing.assert_close(_scores(loaded, *inputs), _scores(original, *inputs), atol=1e-6, rtol=0)


def test_minilm_weights_are_not_copied_into_the_export(tmp_path: Path) -> None:
    aligner = tiny_aligner({"kind": "minilm"})
    path = save_exported(aligner, tmp_path / "model", feature_config=FEATURES)
    keys = load_file(str(path / "model.safetensors")).keys()
    assert not [k for k in keys if k.startswith("text_encoder.")]
    assert (path / "model.safetensors").stat().st_size < 1_000_000
    assert json.loads((path / "text_encoder.json").read_text())["kind"] == "minilm"
    loaded, _ = load_exported(path)  # builds the encoder from its spec; the transformer loads lazily
    assert loaded.text_encoder.dim == 384


def test_saving_replaces_a_previous_export_whole(exported: tuple[Aligner, Path]) -> None:
    _, path = exported
    (path / "stale.txt").write_text("left over")
    other = tiny_aligner({"kind": "learned", "dim": 16}, seed=1)
    save_exported(other, path, feature_config=FEATURES)
    assert not (path / "stale.txt").exists()
    assert not list(path.parent.glob(".model.*"))  # no temporary directory left behind


def test_update_inference_replaces_threshold_and_filter(exported: tuple[Aligner, Path]) -> None:
    _, path = exported
    update_inference(path, InferenceConfig(threshold=0.3, median_filter=7))
    assert read_meta(path)[1].inference == InferenceConfig(threshold=0.3, median_filter=7)
    with pytest.raises(ModelError, match="threshold must be in"):
        update_inference(path, InferenceConfig(threshold=1.5))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "features.json").unlink(), "missing features.json"),
        (lambda p: _set_version(p, FORMAT_VERSION + 1), "version 2 is not supported"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00garbage" * 10), "corrupt weights"),
        (lambda p: (p / "acalign.json").write_text("{not json"), "unreadable"),
        (lambda p: (p / "inference.json").write_text('{"threshold": 0.5, "window": 3}'), "unknown key"),
    ],
    ids=["missing-file", "other-version", "corrupt-weights", "bad-json", "bad-inference"],
)
def test_damaged_exports_raise_one_line_model_errors(exported: tuple[Aligner, Path], damage, message: str) -> None:
    _, path = exported
    damage(path)
    with pytest.raises(ModelError, match=message) as info:
        load_exported(path)
    assert "\n" not in str(info.value)


def test_weights_of_another_shape_raise_model_error(exported: tuple[Aligner, Path], tmp_path: Path) -> None:
    _, path = exported
    bigger = tiny_aligner({"kind": "learned", "dim": 16})
    bigger.config.audio = CRNNConfig(n_mels=16, channels=(4, 12), pools=((2, 4), (2, 4)), gru_hidden=8)
    other = save_exported(Aligner(bigger.config, text_encoder=bigger.text_encoder), tmp_path / "other", feature_config=FEATURES)
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="do not match the model config"):
        load_exported(path)


def test_missing_directory_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_exported(tmp_path / "nowhere")


def test_a_file_or_a_run_folder_given_as_the_model_gets_a_hint(exported: tuple[Aligner, Path]) -> None:
    _, path = exported
    with pytest.raises(ModelError, match=r"model.safetensors: is a file; give the exported model's folder"):
        load_exported(path / "model.safetensors")
    run = path.parent / "run"
    run.mkdir()
    os.symlink(path, run / "model")
    with pytest.raises(ModelError, match=r"missing .*; did you mean .*run/model\?$"):
        load_exported(run)


def _set_version(path: Path, version: int) -> None:
    info = json.loads((path / "acalign.json").read_text())
    info["format_version"] = version
    (path / "acalign.json").write_text(json.dumps(info))
