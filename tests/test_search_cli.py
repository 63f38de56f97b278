"""``acalign index`` and ``search`` argument handling: option order, a file as --out, repair."""

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
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A band-detector model, a two-clip library (dog, bird) and its index."""
    tmp = tmp_path_factory.mktemp("search-cli")
    model = save_band_detector(tmp / "model")
    lib = tmp / "lib"
    lib.mkdir()
    rng = np.random.default_rng(1234)
    sf.write(lib / "dog.wav", scene(10.0, [("dog", 3.0, 5.0)], rng=rng), RATE)
    sf.write(lib / "bird.wav", scene(10.0, [("bird", 3.0, 5.0)], rng=rng), RATE)
    assert main(["index", str(model), str(lib), "--out", str(tmp / "idx"), "--quiet"]) == 0
    return model, lib, tmp / "idx"


@pytest.mark.parametrize(
    "argv",
    [
        ["IDX", "dog", "-k", "1", "--format", "json"],
        ["IDX", "-k", "1", "--format", "json", "dog"],
        ["-k", "1", "IDX", "--format", "json", "dog"],
        ["--format", "json", "IDX", "dog", "-k", "1"],
    ],
)
def test_search_options_before_or_after_the_caption(
    argv: list[str], indexed, capsys: pytest.CaptureFixture
) -> None:
    index = str(indexed[2])
    assert main(["search", *(index if a == "IDX" else a for a in argv)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"] == "dog"
    assert [r["file_id"] for r in data["results"]] == ["dog.wav"]


def test_search_audio_then_a_caption_is_refused_as_two_queries(indexed, capsys) -> None:
    _, lib, index = indexed
    assert main(["search", str(index), "--audio", str(lib / "dog.wav"), "dog"]) == 2
    assert "exactly one" in capsys.readouterr().err  # parsed, then refused by the command


def test_search_help_lists_both_positionals(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert "INDEX [CAPTION]" in out and "--audio FILE" in out


def test_index_out_that_is_a_file_is_one_line(indexed, tmp_path: Path, capsys) -> None:
    model, lib, _ = indexed
    (tmp_path / "taken").write_text("keep me")
    assert main(["index", str(model), str(lib), "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"acalign index: error: {tmp_path / 'taken'}: exists and is not a directory"]
    assert (tmp_path / "taken").read_text() == "keep me"


def test_rerunning_index_repairs_what_search_reports(indexed, tmp_path: Path, capsys) -> None:
    import shutil

    model, lib, built = indexed
    index = Path(shutil.copytree(built, tmp_path / "idx"))
    for frames in index.glob("frames-*.f16"):
        frames.unlink()
    assert main(["search", str(index), "dog"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing or truncated" in err[0]
    repair = err[0].split("repair it with: ", 1)[1].split()
    assert repair[:2] == ["acalign", "index"]
    assert main([*repair[1:], "--quiet"]) == 0
    assert "repaired 2" in capsys.readouterr().out
    assert main(["search", str(index), "dog", "-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[-1] == "dog.wav"
