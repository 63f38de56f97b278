"""Sound phrases from captions, by rule: split at connectives, trim framing words.

Where a manifest has no phrase annotations (Clotho-style data, a user's own captions), phrase-level
training needs the caption's sound phrases: "a dog barks and a man speaks while rain falls" →
"a dog barks", "a man speaks", "rain falls". Captions describe sounds in short clauses joined by
a small set of connectives ("and", "while", "as", "followed by", "then", "with", commas), so a
rule-based chunker over the caption's tokens does well; words that frame a phrase without being
its sound ("you can hear", "in the background", "loudly", "twice") are trimmed from its ends.
Spans index the caption's tokens (``[start, end)``), so they work for every text encoder.

Rules, not a parser: the NLTK/spaCy chunkers need downloaded models, and captions are simple.
:func:`chunk_agreement` measures the rules against annotated phrases
(``benchmarks/bench_chunker.py`` on the AudioGrounding metadata).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Connectives that end a phrase, longest first (each a tuple of lowercase tokens).
CONNECTIVES: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(c.split())
            for c in (
                "and then", "and later", "and soon", "and finally", "and meanwhile", "and at the same time",
                "followed by", "along with", "together with", "as well as", "accompanied by", "mixed with",
                "at the same time as", "after which", "shortly after", "in addition to",
                "and", "while", "whilst", "as", "then", "with", "before", "after", "until", "during",
                "meanwhile", "but", "or", "when", "over", "amid", "amidst", "against", "alongside",
                "following", "plus", "once", "whereas", "underneath", "beneath",
                # Prepositions: AudioGrounding annotates the noun phrase after one as a phrase of
                # its own ("a man speaking" / "a foreign language"; see bench_chunker).
                "in", "on", "along", "into", "through", "from", "near", "by", "across", "at", "to", "of",
                "under", "behind", "around", "inside", "outside", "past", "toward", "towards", "onto",
                "off", "down", "up",
            )
        ),
        key=len,
        reverse=True,
    )
)
PUNCTUATION = frozenset({",", ";", ":", ".", "!", "?", "(", ")", '"', "-", "--"})
#: Words that open a phrase without being part of the sound, longest first.
LEADING: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(c.split())
            for c in (
                "you can hear", "we can hear", "one can hear", "can be heard", "can hear", "we hear", "you hear",
                "there is", "there are", "there was", "is heard", "are heard", "hear", "also", "then", "finally",
                "later", "soon", "again", "suddenly", "the sound of", "sounds of", "sound of", "noise of",
            )
        ),
        key=len,
        reverse=True,
    )
)
#: Words that close a phrase without being part of the sound, longest first.
TRAILING: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(c.split())
            for c in (
                "in the background", "in the foreground", "in the distance", "far away", "from afar",
                "from a distance", "at the same time", "for a while", "all along", "close by", "nearby",
                "several times", "multiple times", "many times", "a few times", "over and over",
                "can be heard", "is heard", "are heard", "loudly", "softly", "quietly", "faintly",
                "repeatedly", "twice", "once", "continuously", "constantly", "briefly", "suddenly",
                "steadily", "throughout", "earlier", "again", "intermittently", "occasionally",
            )
        ),
        key=len,
        reverse=True,
    )
)
#: Multi-word framing phrases that end a phrase wherever they occur ("... rain falls in the
#: background as ...", "a man speaks over the sound of rain"), longest first.
FRAMING: tuple[tuple[str, ...], ...] = tuple(
    sorted({w for w in TRAILING + LEADING if len(w) > 1}, key=len, reverse=True)
)
STOPWORDS = frozenset({"a", "an", "the", "some", "of", "is", "are", "it", "there", "and", "to", "in", "on", "at"})
#: Words ending in -ly that are not adverbs (a trailing adverb such as "quickly" is trimmed).
NOT_ADVERBS = frozenset({"fly", "butterfly", "dragonfly", "firefly", "belly", "jelly", "family", "holy", "rally",
                         "trolley", "bully", "lily", "ally", "reply", "supply", "assembly", "melancholy"})


def _is_adverb(word: str) -> bool:
    return len(word) > 4 and word.endswith("ly") and word not in NOT_ADVERBS


@dataclass(frozen=True)
class Chunk:
    """A sound phrase found in a caption: tokens ``[start, end)`` of the caption."""

    start: int
    end: int

    @property
    def span(self) -> slice:
        """The chunk as a slice of the caption's tokens."""
        return slice(self.start, self.end)


def _starts_with(tokens: Sequence[str], at: int, words: tuple[str, ...]) -> bool:
    return tuple(tokens[at : at + len(words)]) == words


def _connective_at(tokens: Sequence[str], at: int) -> int:
    """Length of the connective (or framing words such as "in the background", which also end
    a phrase) starting at token ``at``; 0 when none."""
    if tokens[at] in PUNCTUATION:
        return 1
    for words in FRAMING:
        if _starts_with(tokens, at, words):
            return len(words)
    for words in CONNECTIVES:
        if _starts_with(tokens, at, words):
            return len(words)
    return 0


def _trim(tokens: Sequence[str], start: int, end: int) -> tuple[int, int]:
    """Drop framing words from both ends of ``[start, end)`` until none is left to drop."""
    changed = True
    while changed and start < end:
        changed = False
        for words in LEADING:
            if end - start > len(words) and _starts_with(tokens, start, words):
                start += len(words)
                changed = True
                break
        for words in TRAILING:
            if end - start > len(words) and tuple(tokens[end - len(words) : end]) == words:
                end -= len(words)
                changed = True
                break
        if end - start > 1 and _is_adverb(tokens[end - 1]):
            end -= 1
            changed = True
    return start, end


def chunk_caption(tokens: Sequence[str]) -> list[Chunk]:
    """Split a caption's tokens into sound phrases.

    Parameters
    ----------
    tokens : sequence of str
        The caption's tokens (any case; compared lowercase).

    Returns
    -------
    list of Chunk
        Non-overlapping spans in caption order; chunks made only of stopwords are left out.

    Examples
    --------
    >>> words = "a dog barks and a man speaks while rain falls in the background".split()
    >>> [" ".join(words[c.span]) for c in chunk_caption(words)]
    ['a dog barks', 'a man speaks', 'rain falls']
    """
    lower = [t.lower() for t in tokens]
    chunks: list[Chunk] = []
    start = at = 0
    while at <= len(lower):
        length = _connective_at(lower, at) if at < len(lower) else 1
        if length:
            first, last = _trim(lower, start, at)
            if last > first and any(t not in STOPWORDS and t not in PUNCTUATION for t in lower[first:last]):
                chunks.append(Chunk(first, last))
            at += length
            start = at
        else:
            at += 1
    return chunks


@dataclass(frozen=True)
class Agreement:
    """How chunks match annotated phrases over a set of captions.

    Attributes
    ----------
    phrases : int
        Annotated phrases compared.
    exact : float
        Fraction of annotated phrases that a chunk matches exactly.
    overlap : float
        Fraction of annotated phrases that some chunk overlaps by at least one token.
    token_precision, token_recall, token_f1 : float
        Over tokens: chunk tokens inside an annotated phrase, and annotated tokens covered.
    chunks_per_phrase : float
        Chunks found per annotated phrase.
    """

    phrases: int
    exact: float
    overlap: float
    token_precision: float
    token_recall: float
    token_f1: float
    chunks_per_phrase: float


def chunk_agreement(captions: Sequence[tuple[Sequence[str], Sequence[tuple[int, int]]]]) -> Agreement:
    """Compare :func:`chunk_caption` with annotated phrases.

    Parameters
    ----------
    captions : sequence of (tokens, spans)
        Each caption's tokens and its annotated phrase spans ``(start, end)`` (end exclusive).

    Returns
    -------
    Agreement
    """
    n_phrases = exact = overlap = chunk_tokens = chunk_inside = gold_tokens = gold_covered = n_chunks = 0
    for tokens, spans in captions:
        chunks = chunk_caption(tokens)
        n_chunks += len(chunks)
        found = {(c.start, c.end) for c in chunks}
        chunked = {i for c in chunks for i in range(c.start, c.end)}
        gold = {i for s, e in spans for i in range(s, e)}
        for start, end in spans:
            n_phrases += 1
            exact += (start, end) in found
            overlap += any(c.start < end and start < c.end for c in chunks)
        chunk_tokens += len(chunked)
        chunk_inside += len(chunked & gold)
        gold_tokens += len(gold)
        gold_covered += len(gold & chunked)
    precision = chunk_inside / chunk_tokens if chunk_tokens else 0.0
    recall = gold_covered / gold_tokens if gold_tokens else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Agreement(
        phrases=n_phrases,
        exact=exact / n_phrases if n_phrases else 0.0,
        overlap=overlap / n_phrases if n_phrases else 0.0,
        token_precision=precision,
        token_recall=recall,
        token_f1=f1,
        chunks_per_phrase=n_chunks / n_phrases if n_phrases else 0.0,
    )
