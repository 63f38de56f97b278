"""AudioCaps-like captions for synthesised clips, with each sound phrase's token span and segments.

A caption strings *mentions* (one per class in the clip) together with connectives that respect
time: "followed by", "then" and "before" only join a mention to one that happens after it,
"after" to one that happens before it, "while", "as" and "with" to one that overlaps it; other
joins ("and") hold either way. Mention order is time order only sometimes, the background is
mentioned sometimes, and faint events may be "in the distance". Tokens are the caption's words,
lowercased, without punctuation (SPEC §2), so a phrase's span indexes them directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from acalign.data.manifest import Caption, Phrase, Segment

from .taxonomy import SoundClass

SEQUENTIAL_SLACK = 0.1  # seconds of overlap still read as "one after the other"


@dataclass
class Mention:
    """A class as it can be mentioned: phrase variants, its segments, and how it sounds."""

    sound_class: SoundClass
    segments: list[tuple[float, float]]
    count: int = 1
    distant: bool = False
    background: bool = False
    snr_db: float | None = None

    @property
    def onset(self) -> float:
        """First onset of the class in the clip."""
        return min(on for on, _ in self.segments)

    @property
    def offset(self) -> float:
        """Last offset of the class in the clip."""
        return max(off for _, off in self.segments)


def words(text: str) -> list[str]:
    """Tokens of ``text``: lowercase words, punctuation dropped, split on whitespace."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).replace("'", "").split()


def merge_segments(segments: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of ``[onset, offset]`` segments as sorted, non-overlapping segments."""
    merged: list[list[float]] = []
    for on, off in sorted(segments):
        if merged and on <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], off)
        else:
            merged.append([on, off])
    return [(a, b) for a, b in merged]


class _Builder:
    """Accumulates caption pieces and records the token span of every phrase."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.tokens: list[str] = []
        self.phrases: list[Phrase] = []

    def text(self, piece: str) -> None:
        self.pieces.append(piece)
        self.tokens += words(piece)

    def phrase(self, piece: str, mention: Mention) -> None:
        start = len(self.tokens)
        self.text(piece)
        segments = [Segment(on, off) for on, off in mention.segments]
        self.phrases.append(Phrase(" ".join(self.tokens[start:]), start, len(self.tokens) - 1, segments))

    def caption(self, caption_id: str) -> Caption:
        text = " ".join(self.pieces).replace(" ,", ",")
        text = text[0].upper() + text[1:] + "."
        return Caption(caption_id, text, list(self.tokens), list(self.phrases))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _relation(first: Mention, second: Mention) -> str:
    """'before' if ``second`` follows ``first``, 'after' if it precedes it, else 'overlap'."""
    if second.onset >= first.offset - SEQUENTIAL_SLACK:
        return "before"
    if second.offset <= first.onset + SEQUENTIAL_SLACK:
        return "after"
    return "overlap"


_CLAUSE_JOINS = {
    "before": [", followed by {n}", ", then {c}", "and then {c}", "before {c}", "and later {c}", "and {c}",
               ", after which {c}", "and soon {c}", "until {c}", ", and finally {c}"],
    "after": ["after {c}", "and {c}", ", with {n} earlier", "once {c}", ", shortly after {n}"],
    "overlap": ["while {c}", "as {c}", "and {c}", "with {n}", "along with {n}", "while {c} at the same time",
                "as well as {n}", "and meanwhile {c}", "accompanied by {n}"],
}
_NOUN_JOINS = {
    "before": ["followed by {n}", "and then {n}", "and {n}", ", then {n}", "and later {n}"],
    "after": ["and {n}", "after {n}", "following {n}"],
    "overlap": ["and {n}", "with {n}", "along with {n}", "together with {n}", "as well as {n}", "mixed with {n}"],
}
#: Openings of a caption: its first mention as a clause, or a noun phrase framed by these words.
_NOUN_OPENINGS = ["{n}", "{n}", "{n}", "{n} can be heard", "you can hear {n}", "we hear {n}"]


LOUD_SNR_DB = 16.0  # an event this far above its background is described as loud
FAINT_SNR_DB = 2.0
LONG_SECONDS = 5.0
SHORT_SECONDS = 0.8


def _trailer(mention: Mention, rng: np.random.Generator) -> str | None:
    """Words after a phrase, outside its span: distance, level, repetition and length."""
    if mention.background:
        return None
    if mention.distant and rng.random() < 0.7:
        return _pick(rng, ["in the distance", "far away", "faintly", "from afar"])
    if mention.snr_db is not None and rng.random() < 0.3:
        if mention.snr_db >= LOUD_SNR_DB:
            return _pick(rng, ["loudly", "nearby", "close by"])
        if mention.snr_db <= FAINT_SNR_DB:
            return _pick(rng, ["quietly", "softly", "faintly"])
    if mention.sound_class.compose is None:  # a run of steps or strokes is already a repetition
        if mention.count == 2 and rng.random() < 0.4:
            return "twice"
        if mention.count >= 3 and rng.random() < 0.5:
            return _pick(rng, ["repeatedly", "several times", "multiple times"])
    extent = sum(off - on for on, off in mention.segments)
    if extent >= LONG_SECONDS and rng.random() < 0.25:
        return _pick(rng, ["continuously", "for a while", "steadily"])
    if extent <= SHORT_SECONDS and mention.count == 1 and rng.random() < 0.25:
        return _pick(rng, ["briefly", "once", "suddenly"])
    return None


def _add(builder: _Builder, template: str, mention: Mention, rng: np.random.Generator) -> None:
    """Add ``template`` (with ``{c}`` clause or ``{n}`` noun slot) for ``mention``."""
    slot = "{c}" if "{c}" in template else "{n}"
    before, after = template.split(slot)
    variants = mention.sound_class.clauses if slot == "{c}" else mention.sound_class.nouns
    if before.strip():
        builder.text(before.strip())
    builder.phrase(_pick(rng, variants), mention)
    trailer = _trailer(mention, rng)
    if trailer:
        builder.text(trailer)
    if after.strip():
        builder.text(after.strip())


def generate_caption(
    events: Sequence[Mention],
    background: Mention | None,
    rng: np.random.Generator,
    *,
    caption_id: str,
    mention_background: float = 0.5,
) -> Caption:
    """Write one caption for a clip's event mentions (and maybe its background).

    Args:
        events: one mention per foreground class (at least one).
        background: the clip's real ambience, or ``None`` for a quiet bed (never mentioned).
        rng: the random source (a seeded generator keeps captions deterministic).
        caption_id: the ``audiocap_id`` of the caption.
        mention_background: probability that the background is mentioned.
    """
    order = sorted(events, key=lambda m: (m.onset, m.sound_class.name))
    if len(order) > 1 and rng.random() < 0.4:
        order = [order[i] for i in rng.permutation(len(order))]
    builder = _Builder()
    with_background = background is not None and rng.random() < mention_background
    lead_background = with_background and rng.random() < 0.3
    if lead_background:
        _add(builder, _pick(rng, ["{c} as", "{c} while", "{n} in the background as", "{c} and"]), background, rng)
    noun_style = not lead_background and rng.random() < 0.35
    joins = _NOUN_JOINS if noun_style else _CLAUSE_JOINS
    _add(builder, _pick(rng, _NOUN_OPENINGS) if noun_style else "{c}", order[0], rng)
    used: set[str] = set()
    for previous, mention in zip(order, order[1:], strict=False):
        options = joins[_relation(previous, mention)]
        fresh = [o for o in options if o not in used] or options  # vary the connectives
        template = _pick(rng, fresh)
        used.add(template)
        _add(builder, template, mention, rng)
    if with_background and not lead_background:
        tail = ["with {n} in the background", "while {c} in the background", "over {n}", "amid {n}",
                "against {n}", "with {n} throughout", "as {c} all along"]
        _add(builder, _pick(rng, tail), background, rng)
    return builder.caption(caption_id)


def generate_captions(
    events: Sequence[Mention],
    background: Mention | None,
    rng: np.random.Generator,
    *,
    count: int,
    id_prefix: str,
    max_tries: int = 60,
    mention_background: float = 0.5,
) -> list[Caption]:
    """Return ``count`` captions of different text (fewer only if the variants run out)."""
    captions: list[Caption] = []
    seen: set[str] = set()
    for _ in range(max_tries):
        caption = generate_caption(
            events, background, rng, caption_id=f"{id_prefix}_{len(captions)}", mention_background=mention_background
        )
        if caption.text not in seen:
            seen.add(caption.text)
            captions.append(caption)
            if len(captions) == count:
                break
    return captions
