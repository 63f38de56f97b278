"""load_model: a model directory loads, and a wrong one fails with one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import acalign
from acalign.errors import ModelError
from acalign.infer.model import AcalignModel, load_model
from acalign.infer.synthetic import save_band_detector


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_band_detector(tmp_path / "model", threshold=0.4)


def test_load_model_reads_the_inference_settings(model_dir: Path) -> None:
    model = acalign.load_model(model_dir)
    assert isinstance(model, AcalignModel)
    assert model.threshold == pytest.approx(0.4)
    assert model.median_filter_seconds == pytest.approx(0.02)
    assert (model.sample_rate, model.frame_rate, model.reduction) == (32000, 50.0, "mean")
    assert len(model.identity) == 64


def test_identity_follows_the_weights_not_the_folder(tmp_path: Path, model_dir: Path) -> None:
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    assert load_model(copy).identity == load_model(model_dir).identity
    (copy / "inference.json").write_text(json.dumps({"threshold": 0.7, "median_filter": 3}))
    assert load_model(copy).identity == load_model(model_dir).identity  # evaluation may retune
    other = save_band_detector(tmp_path / "other")
    config = (other / "config.yaml").read_text().replace("clamp: true", "clamp: false")
    (other / "config.yaml").write_text(config)
    assert load_model(other).identity != load_model(model_dir).identity


def _one_line_model_error(path: Path, match: str) -> None:
    with pytest.raises(ModelError, match=match) as info:
        load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    _one_line_model_error(tmp_path / "nowhere", "not found")


def test_missing_file(model_dir: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    _one_line_model_error(model_dir, "missing model.safetensors")


def test_other_format_version(model_dir: Path) -> None:
    info = json.loads((model_dir / "acalign.json").read_text())
    info["format_version"] = 99
    (model_dir / "acalign.json").write_text(json.dumps(info))
    _one_line_model_error(model_dir, "version 99")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"threshold": "x"}, "threshold"),
        ({"threshold": None}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": 0.3, "median_filter": 2.5}, "median_filter"),
        ({"threshold": 0.3, "median_filter": "3"}, "median_filter"),
        ({"threshold": 0.3, "median_filter": 0}, "median_filter"),
    ],
)
def test_bad_inference_value_names_the_file_and_key(model_dir: Path, values: dict, key: str) -> None:
    (model_dir / "inference.json").write_text(json.dumps(values))
    _one_line_model_error(model_dir, rf"inference\.json: {key} must be")


def test_inference_values_may_be_left_out(model_dir: Path) -> None:
    (model_dir / "inference.json").write_text(json.dumps({"threshold": 1}))
    model = load_model(model_dir)
    assert (model.threshold, model.median_filter_seconds) == (1.0, 0.02)
