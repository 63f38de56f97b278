"""The rule-based phrase chunker: hand-written captions, and agreement with AudioGrounding."""

from __future__ import annotations

from pathlib import Path

import pytest

from acalign.data.phrases import Chunk, chunk_agreement, chunk_caption

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "audiogrounding-v1"


def _phrases(caption: str) -> list[str]:
    words = caption.replace(",", " ,").split()
    return [" ".join(words[c.span]) for c in chunk_caption(words)]


@pytest.mark.parametrize(
    ("caption", "phrases"),
    [
        ("a dog barks and a man speaks while rain falls", ["a dog barks", "a man speaks", "rain falls"]),
        ("A dog barks, followed by a car horn", ["A dog barks", "a car horn"]),
        ("birds chirp as wind blows in the background", ["birds chirp", "wind blows"]),
        ("you can hear footsteps approaching then a door closes", ["footsteps approaching", "a door closes"]),
        ("a cat meows twice and then hisses loudly", ["a cat meows", "hisses"]),
        ("an engine revs along with tires squealing", ["an engine revs", "tires squealing"]),
        ("a man speaks over the sound of rain", ["a man speaks", "rain"]),
        ("water splashes quickly", ["water splashes"]),
        ("a fly buzzes", ["a fly buzzes"]),
        ("and , then", []),
    ],
)
def test_hand_written_captions(caption: str, phrases: list[str]) -> None:
    assert _phrases(caption) == phrases


def test_chunks_are_ordered_spans_of_the_tokens() -> None:
    words = ["a", "dog", "barks", "and", "a", "man", "speaks"]
    assert chunk_caption(words) == [Chunk(0, 3), Chunk(4, 7)]


def test_agreement_counts_by_hand() -> None:
    # chunks "a dog barks" [0, 3) and "a cat meows" [4, 7); annotated [0, 3) (exact) and [5, 7)
    # (inside the second chunk: overlapping, not exact).
    captions = [(["a", "dog", "barks", "and", "a", "cat", "meows"], [(0, 3), (5, 7)])]
    result = chunk_agreement(captions)
    assert result.phrases == 2
    assert result.exact == pytest.approx(0.5)
    assert result.overlap == pytest.approx(1.0)
    assert result.token_precision == pytest.approx(5 / 6)  # chunk tokens 0-2, 4-6; annotated 0-2, 5-6
    assert result.token_recall == pytest.approx(1.0)
    assert result.chunks_per_phrase == pytest.approx(1.0)


@pytest.mark.skipif(not (SHARED / "val.json").is_file(), reason="../shared AudioGrounding v1 metadata not present")
def test_agreement_with_audiogrounding_val() -> None:
    from acalign.data.manifest import read_manifest

    manifest = read_manifest(SHARED / "val.json")
    captions = [(c.tokens, [(p.start_index, p.end_index + 1) for p in c.phrases]) for _, c in manifest.captions()]
    result = chunk_agreement(captions)
    assert result.phrases == 451
    assert result.token_f1 > 0.9 and result.exact > 0.75  # measured 0.975 and 0.849
