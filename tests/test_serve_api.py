"""The serve app's JSON API through FastAPI's TestClient (no browser, no real model)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from acalign.errors import AcalignError
from acalign.serve import ServeSettings, create_app
from acalign.serve.app import parse_phrases
from test_serve_fakes import (
    DOG,
    FakeIndex,
    FakeModel,
    make_library,
    real_model_and_index,
    scene_clip,
)


@pytest.fixture
def world(tmp_path: Path) -> dict:
    paths = make_library(tmp_path / "root")
    return {"root": tmp_path / "root", "data": tmp_path / "root" / "corpus", "paths": paths, "tmp": tmp_path}


def _client(world: dict, **settings: object) -> TestClient:
    app = create_app(
        FakeModel(),
        FakeIndex(world["root"], world["paths"]),
        data_dir=world["data"],
        settings=ServeSettings(max_upload_mb=settings.pop("max_upload_mb", 1.0), **settings),
    )
    return TestClient(app)


def test_parse_phrases_splits_lines_and_commas() -> None:
    assert parse_phrases("a dog barks, a man speaks\n\n  birds   sing \na dog barks") == [
        "a dog barks",
        "a man speaks",
        "birds sing",
    ]
    with pytest.raises(AcalignError, match="at least one phrase"):
        parse_phrases(" ,\n ")


def test_page_and_static_files_are_served(world: dict) -> None:
    client = _client(world)
    page = client.get("/")
    assert page.status_code == 200 and "acalign" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside


def test_config_reports_index_and_data(world: dict) -> None:
    config = _client(world).get("/api/config").json()
    assert config["has_index"] and config["has_data"]
    assert config["n_clips"] == 4 and config["threshold"] == 0.5 and config["max_upload_mb"] == 1.0


def test_clips_merge_index_and_corpus_and_filter(world: dict) -> None:
    client = _client(world)
    clips = client.get("/api/clips").json()
    assert clips["total"] == 4
    by_name = {c["name"]: c for c in clips["clips"]}
    assert by_name["corpus/audio/test/dog_bark.wav"]["source"] == "index"
    assert by_name["corpus/audio/test/dog_bark.wav"]["n_captions"] == 1  # corpus captions attached to the index entry
    assert by_name["corpus/audio/test/park.wav"]["n_captions"] == 2
    found = client.get("/api/clips", params={"q": "IN THE DISTANCE"}).json()  # caption text, any case
    assert [c["name"] for c in found["clips"]] == ["corpus/audio/test/bird_song.wav"]
    detail = client.get(f"/api/clips/{by_name[DOG]['id']}").json()
    assert detail["captions"][0]["phrases"][0]["segments"] == [{"onset": 1.0, "offset": 2.0, "score": None}]


def test_corpus_clip_without_index_gets_its_own_id(world: dict) -> None:
    client = TestClient(create_app(FakeModel(), None, data_dir=world["data"]))
    clips = client.get("/api/clips").json()["clips"]
    assert {c["source"] for c in clips} == {"data"} and len(clips) == 3
    assert client.get(f"/api/audio/{clips[0]['id']}").status_code == 200
    assert client.get("/api/search", params={"q": "dog"}).status_code == 404


def test_audio_is_served_by_id_only(world: dict) -> None:
    client = _client(world)
    response = client.get("/api/audio/corpus/audio/test/dog_bark.wav")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.content == world["paths"][0].read_bytes()
    assert client.get("/api/audio/corpus%2Faudio%2Ftest%2Fdog_bark.wav").status_code == 200
    for bad in ("0", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "test/dog_bark.wav", "corpus%2F..%2F..%2Fcorpus%2Faudio%2Ftest%2Fdog_bark.wav"):
        assert client.get(f"/api/audio/{bad}").status_code == 404, bad
    assert client.get("/api/audio/../../etc/passwd").status_code == 404


def test_search_ranks_and_links_playable_audio(world: dict) -> None:
    client = _client(world)
    response = client.get("/api/search", params={"q": "street noise", "k": 2})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2 and results[0]["name"] == "library/street_noise.wav"
    assert results[0]["rank"] == 1 and results[0]["score"] >= results[1]["score"]
    assert (results[0]["onset"], results[0]["offset"]) == (1.0, 2.0)
    assert client.get(results[0]["audio_url"]).status_code == 200
    assert client.get("/api/search", params={"q": ""}).status_code == 422


def test_ground_a_corpus_clip_with_reference(world: dict) -> None:
    client = _client(world)
    dog = next(c for c in client.get("/api/clips").json()["clips"] if "dog" in c["name"])
    response = client.post("/api/ground", data={"clip_id": dog["id"], "phrases": "A dog barks!, silence"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == 0.5 and body["sample_rate"] == 32000
    assert body["spectrogram"]["image"].startswith("data:image/png;base64,")
    assert body["spectrogram"]["duration"] == pytest.approx(3.0)
    first, second = body["phrases"]
    assert len(first["times"]) == len(first["activation"]) == 151
    [segment] = first["segments"]
    assert segment["onset"] == pytest.approx(1.0, abs=0.05) and segment["offset"] == pytest.approx(2.0, abs=0.05)
    assert first["reference"] == [{"onset": 1.0, "offset": 2.0, "score": None}]  # matched ignoring case/punctuation
    assert second["reference"] is None
    assert body["clip"]["captions"][0]["text"] == "a dog barks twice"


def test_ground_threshold_override(world: dict) -> None:
    client = _client(world)
    body = client.post("/api/ground", data={"clip_id": DOG, "phrases": "x", "threshold": "0.99"}).json()
    assert body["threshold"] == 0.99
    assert client.post("/api/ground", data={"clip_id": DOG, "phrases": "x", "threshold": "2"}).status_code == 422


def test_ground_upload_is_deleted_afterwards(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads = world["tmp"] / "tmpdirs"
    uploads.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(uploads))
    clip = scene_clip(world["tmp"] / "mine.wav", [("dog", 0.5, 1.5)])
    response = _client(world).post(
        "/api/ground",
        data={"phrases": "a tone"},
        files={"file": ("../../mine.wav", clip.read_bytes(), "audio/wav")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["clip"]["name"] == "mine.wav" and body["clip"]["source"] == "upload"
    assert body["phrases"][0]["segments"][0]["onset"] == pytest.approx(0.5, abs=0.05)
    assert list(uploads.iterdir()) == []


def test_keep_uploads_keeps_a_copy(world: dict) -> None:
    keep = world["tmp"] / "kept"
    clip = scene_clip(world["tmp"] / "mine.wav", [("bird", 1.0, 2.0)])
    client = _client(world, keep_uploads=keep)
    response = client.post("/api/ground", data={"phrases": "a tone"}, files={"file": ("mine.wav", clip.read_bytes())})
    assert response.status_code == 200
    [kept] = keep.iterdir()
    assert kept.name.endswith("-mine.wav") and kept.read_bytes() == clip.read_bytes()


def test_upload_too_large_is_413(world: dict) -> None:
    client = _client(world, max_upload_mb=0.05)
    clip = scene_clip(world["tmp"] / "long.wav", [], seconds=2.0)  # 128 kB > 0.05 MB
    response = client.post("/api/ground", data={"phrases": "x"}, files={"file": ("long.wav", clip.read_bytes())})
    assert response.status_code == 413
    assert "upload too large" in response.json()["detail"] and "0.05 MB" in response.json()["detail"]


def test_upload_too_large_without_content_length_is_413(world: dict) -> None:
    client = _client(world, max_upload_mb=0.05)
    clip = scene_clip(world["tmp"] / "long.wav", [], seconds=2.0)
    body = (
        b"--XX\r\nContent-Disposition: form-data; name=\"phrases\"\r\n\r\nx\r\n"
        b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\n\r\n"
        + clip.read_bytes()
        + b"\r\n--XX--\r\n"
    )

    def chunks():  # a generator body is sent chunked, without Content-Length
        yield body

    response = client.post("/api/ground", content=chunks(), headers={"content-type": "multipart/form-data; boundary=XX"})
    assert response.status_code == 413


def test_non_audio_upload_is_415(world: dict) -> None:
    response = _client(world).post(
        "/api/ground",
        data={"phrases": "x"},
        files={"file": ("notes.txt", io.BytesIO(b"this is not audio at all" * 100), "text/plain")},
    )
    assert response.status_code == 415
    assert response.json()["detail"].startswith("notes.txt: not a decodable audio file")


def test_ground_needs_phrases_and_a_source(world: dict) -> None:
    client = _client(world)
    assert client.post("/api/ground", data={"clip_id": DOG, "phrases": " , "}).json()["detail"].startswith(
        "type at least one phrase"
    )
    missing = client.post("/api/ground", data={"phrases": "x"})
    assert missing.status_code == 400 and "pick a clip" in missing.json()["detail"]
    assert client.post("/api/ground", data={"clip_id": "nope", "phrases": "x"}).status_code == 404


def test_openapi_documents_the_endpoints(world: dict) -> None:
    paths = _client(world).get("/openapi.json").json()["paths"]
    for path in ("/api/config", "/api/clips", "/api/clips/{clip_id}", "/api/audio/{clip_id}", "/api/search", "/api/ground"):
        assert path in paths, path
    assert "413" in paths["/api/ground"]["post"]["responses"]


def test_bad_data_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(AcalignError, match="no train.json"):
        create_app(FakeModel(), None, data_dir=tmp_path)


def test_real_model_and_index_end_to_end(world: dict) -> None:
    """The hand-set band-detector model and a real index: search and grounding agree with the truth."""
    model, index = real_model_and_index(world["root"], world["tmp"] / "work")
    client = TestClient(create_app(model, index, data_dir=world["data"]))
    results = client.get("/api/search", params={"q": "a dog barks", "k": 4}).json()["results"]
    assert results[0]["id"] == DOG  # a third of it is dog; park a fifth, street a fifth, birds none
    assert results[-1]["id"] == "corpus/audio/test/bird_song.wav"
    best = results[0]
    assert best["onset"] <= 1.2 and best["offset"] >= 1.8
    assert client.get(best["audio_url"]).status_code == 200
    body = client.post("/api/ground", data={"clip_id": "corpus/audio/test/park.wav", "phrases": "a dog barks\nbirds sing"})
    assert body.status_code == 200, body.text
    dog, bird = body.json()["phrases"]
    [(on, off)] = [(s["onset"], s["offset"]) for s in dog["segments"]]
    assert on == pytest.approx(0.6, abs=0.1) and off == pytest.approx(1.6, abs=0.1)
    assert bird["segments"][0]["onset"] == pytest.approx(2.4, abs=0.1)
    assert dog["reference"] == [{"onset": 0.6, "offset": 1.6, "score": None}]
    empty = client.post("/api/ground", data={"clip_id": DOG, "phrases": "!!!"})
    assert empty.status_code == 400 and "no word" in empty.json()["detail"]
