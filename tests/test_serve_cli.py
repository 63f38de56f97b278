"""``acalign serve``: argument checks, and the app it builds from real model/index directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from acalign.cli import main
from test_serve_fakes import DOG, make_library, real_model_and_index


def test_missing_model_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"acalign serve: error: {tmp_path / 'nope'}: model directory not found"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-upload-mb", "0"], "--max-upload-mb must be positive, got 0.0"),
        (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
        (["--index", "no_such_index"], "no_such_index: index directory not found"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    assert main(["serve", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_serve_builds_the_app_from_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_library(tmp_path / "root")
    real_model_and_index(tmp_path / "root", tmp_path / "work")
    served = {}

    def fake_run(app, host: str, port: int, log_level: str) -> None:  # noqa: ANN001 - stands in for uvicorn.run
        served.update(app=app, host=host, port=port)

    monkeypatch.setattr("uvicorn.run", fake_run)
    argv = ["serve", str(tmp_path / "work" / "model"), "--index", str(tmp_path / "work" / "index")]
    argv += ["--data", str(tmp_path / "root" / "corpus"), "--port", "8123", "--max-upload-mb", "3"]
    assert main(argv) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    client = TestClient(served["app"])
    config = client.get("/api/config").json()
    assert config["has_index"] and config["has_data"] and config["max_upload_mb"] == 3.0
    assert config["model"] == "model" and config["n_clips"] == 4
    assert client.get("/api/search", params={"q": "a dog barks"}).json()["results"][0]["id"] == DOG
