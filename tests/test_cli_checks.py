"""Command-line option checks that must fail in one line before any long work starts."""

from __future__ import annotations

import json

import pytest

import acalign.demo
from acalign.cli import main
from acalign.errors import AcalignError


class StageStarted(Exception):
    """Raised by the stand-in corpus stage: the demo got past its checks."""


@pytest.fixture
def no_demo_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the demo's first stage raise instead of downloading and building a corpus."""

    def started(*args: object, **kwargs: object) -> None:
        raise StageStarted

    monkeypatch.setattr(acalign.demo, "build_corpus_stage", started)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"acalign {argv[0]}: error: ")
    return err


@pytest.mark.parametrize("minutes", ["-1", "0", "nan", "inf"])
def test_demo_rejects_a_senseless_time_budget(tmp_path, capsys, no_demo_work, minutes):
    out = tmp_path / "demo"
    err = _one_line_error(["demo", "--out", str(out), "--max-minutes", minutes], capsys)
    assert "--max-minutes must be a positive number" in err
    assert not out.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_demo_rejects_a_seed_numpy_cannot_take(tmp_path, capsys, no_demo_work, seed):
    out = tmp_path / "demo"
    assert "--seed must be in [0, 4294967295]" in _one_line_error(["demo", "--out", str(out), "--seed", seed], capsys)
    assert not out.exists()


def test_demo_out_is_an_existing_file(tmp_path, capsys, no_demo_work):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    err = _one_line_error(["demo", "--out", str(out)], capsys)
    assert err == f"acalign demo: error: {out}: exists and is not a directory"
    assert out.read_text() == "keep me"


def test_demo_out_below_an_existing_file(tmp_path, capsys, no_demo_work):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    err = _one_line_error(["demo", "--out", str(blocker / "demo")], capsys)
    assert err.endswith(f"{blocker}: exists and is not a directory")


def test_demo_cache_is_an_existing_file(tmp_path, capsys, no_demo_work):
    cache = tmp_path / "cache"
    cache.write_text("")
    err = _one_line_error(["demo", "--out", str(tmp_path / "demo"), "--cache", str(cache)], capsys)
    assert err.endswith(f"{cache}: exists and is not a directory")


def test_demo_valid_options_reach_the_first_stage(tmp_path, no_demo_work):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size", "tiny", "--seed", "7", "--max-minutes", "0.5", "--runs", "paper"]
    with pytest.raises(StageStarted):
        main(argv)
    assert out.is_dir()


def test_demo_size_lists_its_presets(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{tiny,small,default,large}" in help_text and "tiny=60/12/18" in help_text


def test_run_demo_checks_library_arguments(tmp_path, no_demo_work):
    with pytest.raises(AcalignError, match="--size must be one of"):
        acalign.demo.run_demo(tmp_path / "demo", size="huge")
    with pytest.raises(AcalignError, match="--runs must be some of"):
        acalign.demo.run_demo(tmp_path / "demo", runs=["nope"])
    assert not (tmp_path / "demo").exists()


def test_ground_bad_inference_value_is_one_line(tmp_path, capsys):
    from acalign.infer.synthetic import save_band_detector

    model_dir = save_band_detector(tmp_path / "model")
    (model_dir / "inference.json").write_text(json.dumps({"threshold": "x"}))
    err = _one_line_error(["ground", str(model_dir), str(tmp_path / "clip.wav"), "dog"], capsys)
    assert f"{model_dir / 'inference.json'}: threshold must be a number, got 'x'" in err

