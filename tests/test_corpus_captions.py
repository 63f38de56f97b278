"""Caption generation: token spans, time-respecting connectives, background and trailers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from acalign.data.corpus.captions import (
    Mention,
    generate_caption,
    generate_captions,
    merge_segments,
    words,
)
from acalign.data.corpus.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()
EVENT_CLASSES = sorted(name for name, c in TAXONOMY.classes.items() if c.is_event)


def _mention(name: str, on: float, off: float, **kw) -> Mention:
    return Mention(TAXONOMY.classes[name], [(on, off)], **kw)


segment = st.tuples(st.floats(0, 9), st.floats(0.05, 5)).map(lambda t: (round(t[0], 3), round(min(10.0, t[0] + t[1]), 3)))


@settings(max_examples=150, deadline=None)
@given(
    classes=st.lists(st.sampled_from(EVENT_CLASSES), min_size=1, max_size=4, unique=True),
    segments=st.lists(segment, min_size=4, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    with_background=st.booleans(),
    distant=st.booleans(),
)
def test_spans_index_the_phrase_tokens(classes, segments, seed, with_background, distant) -> None:
    mentions = [_mention(c, *s, distant=distant, count=1 + i % 3) for i, (c, s) in enumerate(zip(classes, segments, strict=False))]
    background = _mention("rain", 0.0, 10.0, background=True) if with_background else None
    caption = generate_caption(mentions, background, np.random.default_rng(seed), caption_id="c", mention_background=0.5)
    assert caption.tokens == words(caption.text)
    assert all(t == t.lower() and t.isalnum() for t in caption.tokens)
    assert caption.text[0].isupper() and caption.text.endswith(".")
    spans = [(p.start_index, p.end_index) for p in caption.phrases]
    assert all(a <= b for a, b in spans)
    flat = [i for a, b in spans for i in range(a, b + 1)]
    assert len(flat) == len(set(flat))  # phrases never overlap
    for phrase in caption.phrases:
        assert caption.tokens[phrase.span] == phrase.text.split()
    # every event class is mentioned once; the background at most once
    rain = TAXONOMY.classes["rain"]
    background_phrases = [p for p in caption.phrases if p.text in rain.clauses + rain.nouns]
    assert len(caption.phrases) == len(mentions) + len(background_phrases)
    assert len(background_phrases) <= (1 if with_background else 0)


def test_sequential_connectives_follow_time() -> None:
    early, late = _mention("dog_wolf", 0.5, 1.5), _mention("door", 6.0, 7.0)
    seen = set()
    for seed in range(300):
        caption = generate_caption([early, late], None, np.random.default_rng(seed), caption_id="c")
        first, second = caption.phrases
        between = " ".join(caption.tokens[first.end_index + 1 : second.start_index])
        seen.add(between)
        second_is_late = second.segments[0].onset == 6.0
        if between in ("followed by", "and then", "then", "before", "and later"):
            assert second_is_late, caption.text
        if between == "after":
            assert not second_is_late, caption.text
        assert between not in ("while", "as"), caption.text  # they do not overlap
    assert {"followed by", "after"} <= seen


def test_overlapping_events_may_be_simultaneous_but_never_sequential() -> None:
    a, b = _mention("engine", 1.0, 6.0), _mention("man_speech", 2.0, 4.0)
    for seed in range(200):
        caption = generate_caption([a, b], None, np.random.default_rng(seed), caption_id="c")
        first, second = caption.phrases
        between = " ".join(caption.tokens[first.end_index + 1 : second.start_index])
        assert between not in ("followed by", "then", "before", "after", "and then"), caption.text


def test_val_test_captions_differ() -> None:
    mentions = [_mention("bird", 0.0, 3.0), _mention("typing", 4.0, 6.0)]
    captions = generate_captions(mentions, None, np.random.default_rng(0), count=5, id_prefix="x")
    assert len({c.text for c in captions}) == 5
    assert [c.caption_id for c in captions] == [f"x_{i}" for i in range(5)]


def test_distant_events_are_said_to_be_far() -> None:
    texts = [
        generate_caption([_mention("thunder", 1, 3, distant=True)], None, np.random.default_rng(s), caption_id="c").text
        for s in range(40)
    ]
    assert any("in the distance" in t or "far away" in t or "faintly" in t for t in texts)


def test_merge_segments() -> None:
    assert merge_segments([(3, 4), (0, 1), (0.5, 2), (4, 5)]) == [(0, 2), (3, 5)]
