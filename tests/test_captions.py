"""Caption cleaning keeps phrase spans valid; the vocabulary and its OOV fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from acalign.data.captions import (
    PAD_INDEX,
    UNK,
    UNK_INDEX,
    CleaningConfig,
    Vocabulary,
    clean_caption,
    clean_caption_with_spans,
    clean_manifest,
    stem_candidates,
    tokenise,
)
from acalign.data.manifest import Caption, Clip, Manifest, Phrase, read_manifest
from acalign.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared"
AG_TRAIN = SHARED / "data" / "audiogrounding-v1" / "train.json"


def test_tokenise_splits_clitics_hyphens_and_punctuation():
    assert tokenise("a dog's high-pitched bark, isn't it?") == [
        "a",
        "dog",
        "'s",
        "high",
        "-",
        "pitched",
        "bark",
        ",",
        "is",
        "n't",
        "it",
        "?",
    ]


def test_tokenise_can_keep_hyphenated_words():
    assert tokenise("a high-pitched bark.", split_hyphens=False) == [
        "a",
        "high-pitched",
        "bark",
        ".",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "A dog's high-pitched bark, isn't it?",
            ["A", "dog", "high", "pitched", "bark", "is", "not", "it"],
        ),
        ("it's raining; the car's engine", ["it", "is", "raining", "the", "car", "engine"]),
        ("they're here and can't stop", ["they", "are", "here", "and", "can", "not", "stop"]),
        ("a motorcyle accelarating", ["a", "motorcycle", "accelerating"]),
        ("the dogs' barks", ["the", "dogs", "barks"]),
    ],
)
def test_clean_caption_reference_rules(text, expected):
    assert clean_caption(text) == expected


def test_clean_caption_options():
    text = "A dog's bark, then silence."
    assert clean_caption(text, config=CleaningConfig(lowercase=True)) == [
        "a",
        "dog",
        "bark",
        "then",
        "silence",
    ]
    kept = clean_caption(text, config=CleaningConfig(strip_punctuation=False))
    assert kept == ["A", "dog", "bark", ",", "then", "silence", "."]


def test_spans_follow_dropped_and_split_tokens():
    tokens = ["a", "cat", "'s", "high-pitched", "meows", ",", "then", "it", "'s", "quiet"]
    new, spans = clean_caption_with_spans(tokens, [(0, 1), (3, 4), (7, 9), (5, 5)])
    assert new == ["a", "cat", "high", "pitched", "meows", "then", "it", "is", "quiet"]
    assert spans == [(0, 1), (2, 4), (6, 8), None]


def test_spans_on_raw_text_index_whitespace_tokens():
    new, spans = clean_caption_with_spans("a cat's meow, then it's quiet", [(0, 1), (4, 5)])
    assert new == ["a", "cat", "meow", "then", "it", "is", "quiet"]
    assert spans == [(0, 1), (4, 6)]


def test_spans_out_of_range_raise_data_error():
    with pytest.raises(DataError, match="outside"):
        clean_caption_with_spans(["a", "dog"], [(1, 2)])


def test_clean_manifest_remaps_and_drops_empty_phrases():
    caption = Caption(
        "c1",
        "a dog's bark , loud",
        ["a", "dog", "'s", "bark", ",", "loud"],
        [Phrase("bark", 3, 3), Phrase(",", 4, 4), Phrase("loud", 5, 5)],
    )
    manifest = Manifest([Clip("x.wav", [caption])])
    cleaned = clean_manifest(manifest)
    new = cleaned.clips[0].captions[0]
    assert new.tokens == ["a", "dog", "bark", "loud"]
    assert [(p.text, p.start_index, p.end_index) for p in new.phrases] == [
        ("bark", 2, 2),
        ("loud", 3, 3),
    ]
    assert manifest.clips[0].captions[0].tokens[2] == "'s"  # the input is not modified
    cleaned.validate()


@pytest.mark.skipif(not AG_TRAIN.is_file(), reason="shared AudioGrounding metadata not present")
def test_cleaning_keeps_every_audiogrounding_span_valid():
    manifest = read_manifest(AG_TRAIN)
    cleaned = clean_manifest(manifest)
    cleaned.validate()
    checked = 0
    for (_, before), (_, after) in zip(manifest.captions(), cleaned.captions(), strict=True):
        assert len(after.phrases) == len(before.phrases)
        for phrase in after.phrases:
            assert after.tokens[phrase.span] == clean_caption(phrase.text), (
                before.text,
                phrase.text,
            )
            checked += 1
    assert checked == manifest.n_phrases


def test_stem_candidates():
    assert stem_candidates("barking")[0] == "bark"
    assert stem_candidates("running")[0] == "run"
    assert "bus" in stem_candidates("buses")
    assert stem_candidates("puppies") == ["puppy"]
    assert stem_candidates("glass") == []


def test_vocabulary_specials_min_count_and_order():
    vocab = Vocabulary.build(
        [["dog", "barks"], ["dog", "meows"], ["cat", "meows", "dog"]], min_count=2
    )
    assert vocab.words == ["<pad>", "<unk>", "dog", "meows"]
    assert vocab.index("<pad>") == PAD_INDEX
    assert vocab.index("zebra") == UNK_INDEX


def test_vocabulary_oov_fallback_to_stem_then_unk():
    vocab = Vocabulary.build([["a", "dog", "barks"], ["run"]])
    assert vocab.resolve("barks") == "barks"
    assert vocab.resolve("Dog") == "dog"
    assert vocab.resolve("barking") == "barks"  # same stem as a known word
    assert vocab.resolve("running") == "run"
    assert vocab.resolve("quacking") == UNK
    assert vocab.encode(["a", "dog", "quacks"]) == [vocab.index("a"), vocab.index("dog"), UNK_INDEX]


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build([["a", "dog", "barks"], ["a", "cat"]])
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    assert loaded.counts == vocab.counts
    assert loaded.resolve("barking") == "barks"


def test_vocabulary_load_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"words": ["dog"]}')
    with pytest.raises(DataError, match="bad.json"):
        Vocabulary.load(bad)


@pytest.mark.skipif(not AG_TRAIN.is_file(), reason="shared AudioGrounding metadata not present")
def test_vocabulary_from_train_split_only():
    train = clean_manifest(read_manifest(AG_TRAIN))
    vocab = Vocabulary.from_manifest(train)
    train_words = {t for _, cap in train.captions() for t in cap.tokens}
    assert set(vocab.words[2:]) == train_words


def test_unicode_words_and_typographic_apostrophes():
    assert clean_caption("the café’s bell isn’t loud") == [
        "the",
        "café",
        "bell",
        "is",
        "not",
        "loud",
    ]


def test_contractions_kept_when_not_expanded():
    config = CleaningConfig(expand_contractions=False)
    assert clean_caption("they're here", config=config) == ["they", "'re", "here"]
