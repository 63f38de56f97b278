"""``acalign ground``, ``index`` and ``search`` in-process: output formats and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acalign.cli import main
from acalign.infer.synthetic import save_band_detector, scene

RATE = 32000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_band_detector(tmp_path_factory.mktemp("models") / "detector")


@pytest.fixture
def clip(tmp_path: Path, rng) -> Path:
    """12 s, 48 kHz stereo FLAC: a dog at 2–4 s, a bird at 9–11 s (across the first window cut)."""
    wave = scene(12.0, [("dog", 2.0, 4.0), ("bird", 9.0, 11.0)], sample_rate=48000, rng=rng)
    path = tmp_path / "scene.flac"
    sf.write(path, np.stack([wave, wave], axis=1), 48000)
    return path


def test_ground_table(model_dir: Path, clip: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ground", str(model_dir), str(clip), "a dog barks", "birds", "a car"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(str(clip)) and "12.00 s" in out[0]
    assert out[1].split() == ["phrase", "onset", "offset", "score"]
    rows = [line.split() for line in out[2:]]
    assert rows[0][:5] == ["a", "dog", "barks", "1.99", "4.01"]
    assert rows[1][:3] == ["birds", "8.99", "11.01"]
    assert rows[2][:4] == ["a", "car", "-", "-"]


def test_ground_json_parses(model_dir: Path, clip: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["ground", str(model_dir), str(clip), "dog", "bird", "--format", "json", "--threshold", "0.3"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["threshold"] == 0.3 and data["duration"] == pytest.approx(12.0)
    dog, bird = data["phrases"]
    assert dog["phrase"] == "dog" and dog["tokens"] == ["dog"]
    assert [(s["onset"], s["offset"]) for s in dog["segments"]] == [(1.99, 4.01)]
    assert [(s["onset"], s["offset"]) for s in bird["segments"]] == [(8.99, 11.01)]
    assert 0.9 < bird["segments"][0]["score"] <= 1.0


def test_ground_tsv_has_header_and_rows(model_dir: Path, clip: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ground", str(model_dir), str(clip), "dog", "bird", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["filename", "onset", "offset", "event_label", "score"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[3]) for r in rows] == [("scene.flac", "dog"), ("scene.flac", "bird")]
    assert [(float(r[1]), float(r[2])) for r in rows] == [(1.99, 4.01), (8.99, 11.01)]
    assert main(["ground", str(model_dir), str(clip), "dog", "bird", "--format", "tsv", "--bf16"]) == 0
    fast = [line.split("\t")[:4] for line in capsys.readouterr().out.splitlines()[1:]]
    assert fast == [r[:4] for r in rows]


def test_ground_plot_and_median_filter(
    model_dir: Path, tmp_path: Path, rng, capsys: pytest.CaptureFixture
) -> None:
    wave = scene(75.0, [("dog", 30.0, 31.0), ("dog", 31.06, 33.0)], rng=rng)
    sf.write(tmp_path / "long.wav", wave, RATE)
    png = tmp_path / "plots" / "long.png"
    args = ["ground", str(model_dir), str(tmp_path / "long.wav"), "dog", "--format", "json"]
    assert main([*args, "--plot", str(png), "--median-filter", "0.2"]) == 0
    segments = json.loads(capsys.readouterr().out)["phrases"][0]["segments"]
    assert [(s["onset"], s["offset"]) for s in segments] == [(29.99, 33.01)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args, "--median-filter", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)["phrases"][0]["segments"]) == 2


def test_index_then_search(model_dir: Path, tmp_path: Path, rng, capsys: pytest.CaptureFixture) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "dog.wav", scene(10.0, [("dog", 3.0, 5.0)], rng=rng), RATE)
    sf.write(lib / "bird.wav", scene(10.0, [("bird", 3.0, 5.0)], rng=rng), RATE)
    sf.write(lib / "quiet.wav", scene(10.0, [], rng=rng), RATE)
    index = tmp_path / "idx"
    assert main(["index", str(model_dir), str(lib), "--out", str(index), "--quiet"]) == 0
    assert "3 files" in capsys.readouterr().out
    assert main(["search", str(index), "a dog barks", "-k", "2", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"] == "a dog barks"
    first = data["results"][0]
    assert (first["rank"], first["file_id"], first["onset"], first["offset"]) == (1, "dog.wav", 3.0, 5.0)
    assert main(["search", str(index), "--audio", str(lib / "bird.wav"), "-k", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["rank", "score", "onset", "offset", "file"]
    assert table[2].split()[-1] == "bird.wav"


def _assert_one_line_error(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code != 0
    assert len(err) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in err[0]


def test_ground_errors_are_one_line(model_dir: Path, clip: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "garbage.mp3").write_bytes(b"\x00\x01 not audio" * 100)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    model, audio = str(model_dir), str(clip)
    _assert_one_line_error(["ground", model, str(tmp_path / "missing.wav"), "dog"], capsys, "missing.wav", "not found")
    _assert_one_line_error(["ground", model, str(tmp_path / "garbage.mp3"), "dog"], capsys, "garbage.mp3")
    _assert_one_line_error(["ground", model, str(tmp_path / "empty.wav"), "dog"], capsys, "empty.wav", "empty")
    _assert_one_line_error(["ground", model, audio, "dog", ""], capsys, "phrase 2", "empty")
    _assert_one_line_error(["ground", model, audio, "dog", "--threshold", "2"], capsys, "--threshold")
    _assert_one_line_error(["ground", str(tmp_path / "no-model"), audio, "dog"], capsys, "no-model", "not found")


def test_other_model_version_is_one_line(model_dir: Path, clip: Path, tmp_path: Path, capsys) -> None:
    import shutil

    old = Path(shutil.copytree(model_dir, tmp_path / "old-model"))
    info = json.loads((old / "acalign.json").read_text())
    info["format_version"] = 0
    (old / "acalign.json").write_text(json.dumps(info))
    _assert_one_line_error(["ground", str(old), str(clip), "dog"], capsys, "old-model", "version 0")


def test_index_and_search_errors_are_one_line(model_dir: Path, tmp_path: Path, capsys) -> None:
    _assert_one_line_error(
        ["index", str(model_dir), str(tmp_path / "nowhere"), "--out", str(tmp_path / "i"), "--quiet"],
        capsys,
        "nowhere",
    )
    _assert_one_line_error(["search", str(tmp_path / "no-index"), "dog"], capsys, "no-index")
    _assert_one_line_error(["search", str(tmp_path / "no-index")], capsys, "CAPTION or --audio")
