"""Manifests: both AudioGrounding layouts, validation errors, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acalign.data.manifest import (
    Caption,
    Clip,
    Manifest,
    Phrase,
    Segment,
    read_manifest,
    write_manifest,
)
from acalign.errors import DataError


def _v2_item(**overrides):
    item = {
        "audiocap_id": "1",
        "audio_id": "a.wav",
        "tokens": ["a", "dog", "barks", "while", "wind", "blows"],
        "phrases": [
            {"phrase": "a dog barks", "start_index": 0, "end_index": 2, "segments": [[1.0, 2.5]]},
            {"phrase": "wind blows", "start_index": 4, "end_index": 5, "segments": [[0, 0]]},
        ],
    }
    item.update(overrides)
    return item


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("split", "clips", "captions", "phrases"),
    [("train", 4489, 4489, 12373), ("val", 31, 155, 451)],
)
def test_real_v1_counts(audiogrounding_v1, split, clips, captions, phrases):
    manifest = read_manifest(audiogrounding_v1 / f"{split}.json")
    assert (len(manifest), manifest.n_captions, manifest.n_phrases) == (clips, captions, phrases)


def test_real_v1_phrase_tokens_match_span(audiogrounding_v1):
    manifest = read_manifest(audiogrounding_v1 / "train.json")
    for _, caption in manifest.captions():
        for phrase in caption.phrases:
            assert caption.phrase_tokens(phrase) == phrase.text.split()


def test_real_v1_unannotated_kept_not_events(audiogrounding_v1):
    manifest = read_manifest(audiogrounding_v1 / "train.json")
    unannotated = [p for _, c in manifest.captions() for p in c.phrases if not p.annotated]
    assert unannotated, "the real metadata has [[0, 0]] phrases"
    assert all(p.events == [] for p in unannotated)


def test_real_v1_round_trips_through_v2(audiogrounding_v1, tmp_path):
    original = read_manifest(audiogrounding_v1 / "val.json")
    write_manifest(original, tmp_path / "val.json")
    again = read_manifest(tmp_path / "val.json")
    assert [c.audio_id for c in again] == [c.audio_id for c in original]
    for (_, a), (_, b) in zip(original.captions(), again.captions(), strict=True):
        assert (a.caption_id, a.tokens, a.phrases) == (b.caption_id, b.tokens, b.phrases)


def test_v2_reads_and_groups_captions_by_clip(tmp_path):
    items = [_v2_item(), _v2_item(audiocap_id="2")]
    manifest = read_manifest(_write(tmp_path, items))
    assert len(manifest) == 1 and manifest.n_captions == 2
    phrase = manifest.clips[0].captions[0].phrases[0]
    assert phrase.segments == [Segment(1.0, 2.5)] and phrase.span == slice(0, 3)
    assert manifest.clips[0].captions[0].phrases[1].annotated is False


def test_v2_accepts_token_string(tmp_path):
    manifest = read_manifest(_write(tmp_path, [_v2_item(tokens="a dog barks while wind blows")]))
    assert manifest.clips[0].captions[0].tokens[1] == "dog"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.pop("tokens"), "missing field 'tokens'"),
        (lambda i: i["phrases"][0].update(end_index=9), "outside the caption"),
        (lambda i: i["phrases"][0].update(segments=[[3.0, 1.0]]), "onset 3.0 > offset 1.0"),
        (lambda i: i["phrases"][0].update(segments=[[-1.0, 1.0]]), "negative time"),
        (lambda i: i["phrases"][0].pop("segments"), "missing field 'segments'"),
    ],
)
def test_v2_validation_names_file_clip_and_field(tmp_path, change, message):
    item = _v2_item()
    change(item)
    path = _write(tmp_path, [item])
    with pytest.raises(DataError, match=message) as info:
        read_manifest(path)
    assert str(path) in str(info.value) and "a.wav" in str(info.value)


def test_duplicate_caption_ids_rejected(tmp_path):
    items = [_v2_item(), _v2_item(audio_id="b.wav")]
    with pytest.raises(DataError, match="duplicate audiocap_id"):
        read_manifest(_write(tmp_path, items))


def test_missing_audio_reported(tmp_path):
    manifest = read_manifest(_write(tmp_path, [_v2_item()]))
    with pytest.raises(DataError, match="audio file .*a.wav is missing"):
        manifest.validate(audio_dir=tmp_path)
    (tmp_path / "a.wav").write_bytes(b"")
    manifest.validate(audio_dir=tmp_path)


def test_not_a_manifest(tmp_path):
    with pytest.raises(DataError, match="neither AudioGrounding v1"):
        read_manifest(_write(tmp_path, {"hello": 1}))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(DataError, match="not valid JSON"):
        read_manifest(tmp_path / "bad.json")
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "absent.json")


def test_write_is_atomic_and_keeps_unannotated(tmp_path):
    caption = Caption("c1", "wind", ["wind"], [Phrase("wind", 0, 0, [Segment(0, 0)], annotated=False)])
    path = tmp_path / "out.json"
    write_manifest(Manifest([Clip("x.wav", [caption], duration=10.0)]), path)
    data = json.loads(path.read_text())
    assert data[0]["phrases"][0]["segments"] == [[0.0, 0.0]] and data[0]["duration"] == 10.0
    assert list(tmp_path.iterdir()) == [path]
