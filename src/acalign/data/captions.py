"""Caption cleaning that keeps phrase spans valid, and the word vocabulary.

Cleaning follows the reference method (SPEC §2): fix a handful of spelling errors, expand
contractions, split hyphens, tokenise, drop punctuation and possessive markers. Unlike the
reference (which used NLTK's tokenizer and data), tokenising is one regular expression: no
downloads, and every output token remembers which input token it came from, so a phrase's
``[start_index, end_index]`` span can be moved onto the cleaned tokens exactly.

:class:`Vocabulary` is built from the *training* split only (the reference leaked test words
into it); out-of-vocabulary words fall back to a stem of a known word, then ``<unk>``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from acalign.config import atomic_write_json, read_json
from acalign.data.manifest import Caption, Manifest, Phrase
from acalign.errors import DataError

log = logging.getLogger(__name__)

PAD = "<pad>"
UNK = "<unk>"
PAD_INDEX = 0
UNK_INDEX = 1

# A handful of misspellings, as the reference fixed a few; the first six occur in the
# AudioGrounding captions themselves.
SPELLING_FIXES: dict[str, str] = {
    "clicket": "clickety",
    "enigne": "engine",
    "moter": "motor",
    "omeone": "someone",
    "whipper": "whimper",
    "whippering": "whimpering",
    "accelarating": "accelerating",
    "accelarates": "accelerates",
    "motercycle": "motorcycle",
    "motorcyle": "motorcycle",
    "nosie": "noise",
    "sqeaking": "squeaking",
    "whislte": "whistle",
    "whistleing": "whistling",
}

# Contraction suffixes as the tokenizer splits them ("it's" -> "it", "'s").
_CONTRACTIONS: dict[str, str] = {
    "n't": "not",
    "'re": "are",
    "'ve": "have",
    "'ll": "will",
    "'d": "would",
    "'m": "am",
}
_IRREGULAR_NEGATIONS: dict[str, str] = {"ca": "can", "wo": "will", "sha": "shall"}
# "'s" is "is" after these words and a possessive marker (dropped) after any other.
_IS_AFTER: frozenset[str] = frozenset(
    {"it", "that", "there", "here", "he", "she", "what", "who", "where", "how", "this", "let"}
)
_POSSESSIVES: frozenset[str] = frozenset({"'s", "'"})

# Word (Unicode letters/digits; a clitic split off), clitic ("'s", "n't"), stray quote, or any
# other single non-space character (punctuation). {word} is a plain or a hyphenated word.
_TOKEN_TEMPLATE = r"{word}(?=n't\b)|n't\b|'[^\W\d_]+\b|{word}|'|[^\s\w']|_"
_TOKEN_RE = re.compile(_TOKEN_TEMPLATE.format(word=r"[^\W_]+"))
_TOKEN_KEEP_HYPHENS_RE = re.compile(_TOKEN_TEMPLATE.format(word=r"[^\W_]+(?:-[^\W_]+)*"))
_WORD_RE = re.compile(r"[^\W_]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@dataclass
class CleaningConfig:
    """Options of caption cleaning (the reference: no lowercasing, punctuation dropped)."""

    lowercase: bool = False
    strip_punctuation: bool = True
    fix_spelling: bool = True
    expand_contractions: bool = True
    split_hyphens: bool = True


# --------------------------------------------------------------------------- cleaning


def tokenise(text: str, *, split_hyphens: bool = True) -> list[str]:
    """Split ``text`` into word, clitic ("'s", "n't") and punctuation tokens.

    Example: ``tokenise("a dog's high-pitched bark, isn't it")`` →
    ``['a', 'dog', "'s", 'high', '-', 'pitched', 'bark', ',', 'is', "n't", 'it']``.
    With ``split_hyphens=False`` hyphenated words stay whole.
    """
    pattern = _TOKEN_RE if split_hyphens else _TOKEN_KEEP_HYPHENS_RE
    return pattern.findall(text.translate(_APOSTROPHES))


def clean_tokens(
    tokens: Sequence[str], *, config: CleaningConfig | None = None
) -> tuple[list[str], list[int]]:
    """Clean a token list; return ``(new_tokens, origin)``.

    Each input token is re-tokenised (clitics, hyphens, punctuation split off) and its pieces
    cleaned; ``origin[k]`` is the index in ``tokens`` of the token that ``new_tokens[k]`` came
    from, so spans can be remapped. A piece's cleaning depends on itself and its neighbours
    only for "'s" (``is`` after a pronoun, else a dropped possessive) and "ca/wo" + "n't".
    """
    config = config or CleaningConfig()
    pieces: list[tuple[str, int]] = []
    for index, token in enumerate(tokens):
        for piece in tokenise(token, split_hyphens=config.split_hyphens):
            pieces.append((piece, index))
    cleaned: list[str] = []
    origin: list[int] = []
    previous = ""
    for piece, index in pieces:
        word = _clean_piece(piece, previous, config)
        previous = piece.lower()
        if word is None:
            continue
        if config.fix_spelling:
            word = SPELLING_FIXES.get(word.lower(), word)
        cleaned.append(word.lower() if config.lowercase else word)
        origin.append(index)
    if config.expand_contractions:
        cleaned = _fix_negation_stems(cleaned)
    return cleaned, origin


def _clean_piece(piece: str, previous: str, config: CleaningConfig) -> str | None:
    """Return the cleaned form of one tokenizer piece, or ``None`` to drop it."""
    lower = piece.lower()
    if lower == "'s":
        if config.expand_contractions and previous in _IS_AFTER:
            return "us" if previous == "let" else "is"
        return None
    if lower in _POSSESSIVES:
        return None
    if lower in _CONTRACTIONS:
        return _CONTRACTIONS[lower] if config.expand_contractions else piece
    if not _WORD_RE.search(piece):
        return None if config.strip_punctuation else piece
    if lower.startswith("'"):
        return piece[1:]  # a stray quote glued to a word ("'train")
    return piece


def clean_caption(
    tokens_or_text: str | Sequence[str], *, config: CleaningConfig | None = None
) -> list[str]:
    """Clean a caption given as raw text or as a token list; return the cleaned tokens."""
    tokens = _as_tokens(tokens_or_text)
    return clean_tokens(tokens, config=config)[0]


def _fix_negation_stems(tokens: list[str]) -> list[str]:
    """Turn "ca not"/"wo not" (from "can't"/"won't") into "can not"/"will not"."""
    out = list(tokens)
    for k in range(len(out) - 1):
        if out[k + 1].lower() == "not" and out[k].lower() in _IRREGULAR_NEGATIONS:
            out[k] = _IRREGULAR_NEGATIONS[out[k].lower()]
    return out


def _as_tokens(tokens_or_text: str | Sequence[str]) -> list[str]:
    if isinstance(tokens_or_text, str):
        return tokens_or_text.split()
    return list(tokens_or_text)


def clean_caption_with_spans(
    tokens_or_text: str | Sequence[str],
    phrases: Sequence[tuple[int, int]],
    *,
    config: CleaningConfig | None = None,
) -> tuple[list[str], list[tuple[int, int] | None]]:
    """Clean a caption and move phrase spans onto the cleaned tokens.

    Args:
        tokens_or_text: the caption's tokens, or its text (then split on whitespace, and the
            spans index those whitespace tokens).
        phrases: inclusive ``(start_index, end_index)`` spans into the input tokens, as in
            :class:`acalign.data.manifest.Phrase`.
        config: cleaning options.

    Returns:
        ``(new_tokens, new_spans)``; ``new_spans[i]`` is the inclusive span of phrase ``i`` in
        ``new_tokens``, or ``None`` when cleaning removed all of its tokens (pure punctuation).

    Raises:
        DataError: a span lies outside the input tokens.
    """
    tokens = _as_tokens(tokens_or_text)
    cleaned, origin = clean_tokens(tokens, config=config)
    spans: list[tuple[int, int] | None] = []
    for start, end in phrases:
        if not (0 <= start <= end < len(tokens)):
            raise DataError(
                f"phrase span [{start}, {end}] is outside the caption's {len(tokens)} tokens"
            )
        inside = [k for k, o in enumerate(origin) if start <= o <= end]
        spans.append((inside[0], inside[-1]) if inside else None)
    return cleaned, spans


def clean_manifest(manifest: Manifest, *, config: CleaningConfig | None = None) -> Manifest:
    """Return a copy of ``manifest`` with every caption's tokens cleaned and spans remapped.

    The caption text is kept as it was. Phrases whose tokens all vanish (punctuation only)
    are dropped with a warning. Captions left with no token raise :class:`DataError`.
    """
    result = copy.deepcopy(manifest)
    dropped = 0
    for clip, caption in result.captions():
        dropped += _clean_caption_in_place(
            caption, config, f"{manifest.source}: clip {clip.audio_id!r}"
        )
    if dropped:
        log.warning(
            "%s: %d phrase(s) had no word left after cleaning and were dropped",
            manifest.source,
            dropped,
        )
    return result


def _clean_caption_in_place(caption: Caption, config: CleaningConfig | None, where: str) -> int:
    spans = [(p.start_index, p.end_index) for p in caption.phrases]
    tokens, new_spans = clean_caption_with_spans(caption.tokens, spans, config=config)
    if not tokens:
        raise DataError(f"{where}, caption {caption.caption_id!r}: no word left after cleaning")
    kept: list[Phrase] = []
    for phrase, span in zip(caption.phrases, new_spans, strict=True):
        if span is not None:
            kept.append(Phrase(phrase.text, span[0], span[1], phrase.segments, phrase.annotated))
    dropped = len(caption.phrases) - len(kept)
    caption.tokens = tokens
    caption.phrases = kept
    return dropped


# --------------------------------------------------------------------------- stemming


def stem_candidates(word: str) -> list[str]:
    """Possible base forms of ``word`` by stripping a plural/-ing/-ed suffix, best first.

    Our own tiny suffix stripper (no NLTK data is reachable here, and a full lemmatiser is
    overkill for an out-of-vocabulary fallback): ``"barking"`` → ``["bark", "barke"]``,
    ``"running"`` → ``["run", "runn", "runne"]``, ``"buses"`` → ``["buse", "bus"]``,
    ``"puppies"`` → ``["puppy"]``. A word with no such suffix has no candidate.
    """
    lower = word.lower()
    out: list[str] = []
    if lower.endswith("ies") and len(lower) > 4:
        out.append(lower[:-3] + "y")
    elif lower.endswith("s") and not lower.endswith(("ss", "us", "is")) and len(lower) > 3:
        out.append(lower[:-1])
        if lower.endswith("es") and lower[:-2].endswith(("s", "x", "z", "ch", "sh")):
            out.append(lower[:-2])
    for suffix in ("ing", "ed"):
        base = lower[: -len(suffix)]
        if not lower.endswith(suffix) or len(base) < 2:
            continue
        if len(base) >= 3 and base[-1] == base[-2] and base[-1] not in "aeiouslz":
            out.append(base[:-1])  # doubled consonant: running -> run
        out += [base, base + "e"]
    return list(dict.fromkeys(out))


def stem(word: str) -> str:
    """A crude stem of ``word``: its first suffix-stripped candidate, or itself (lowercased)."""
    candidates = stem_candidates(word)
    return candidates[0] if candidates else word.lower()


# --------------------------------------------------------------------------- vocabulary


class Vocabulary:
    """Words of the training split with ``<pad>`` = 0 and ``<unk>`` = 1.

    Lookup of an unknown word tries, in order: the word, its lowercase form, its stem
    candidates (:func:`stem_candidates`), then any known word with the same :func:`stem`;
    only then ``<unk>``.
    """

    def __init__(self, words: Iterable[str], *, counts: dict[str, int] | None = None) -> None:
        """Build from ``words`` in order; ``<pad>``/``<unk>`` go in front, repeats are ignored."""
        self.words: list[str] = [PAD, UNK]
        self.counts: dict[str, int] = dict(counts or {})
        self._index: dict[str, int] = {PAD: PAD_INDEX, UNK: UNK_INDEX}
        for word in words:
            if word not in self._index:
                self._index[word] = len(self.words)
                self.words.append(word)
        self._by_stem: dict[str, str] = {}
        for word in self.words[2:]:
            key = stem(word)
            best = self._by_stem.get(key)
            if best is None or self.counts.get(word, 0) > self.counts.get(best, 0):
                self._by_stem[key] = word

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], *, min_count: int = 1) -> Vocabulary:
        """Count words over ``token_lists`` and keep those seen at least ``min_count`` times.

        Words are ordered by descending count, then alphabetically (deterministic).
        """
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        kept = sorted(
            (w for w, n in counter.items() if n >= min_count), key=lambda w: (-counter[w], w)
        )
        return cls(kept, counts={w: counter[w] for w in kept})

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, min_count: int = 1) -> Vocabulary:
        """Build from the (already cleaned) tokens of a *training* manifest."""
        return cls.build((cap.tokens for _, cap in manifest.captions()), min_count=min_count)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def resolve(self, word: str) -> str:
        """Return the vocabulary word that ``word`` maps to (``"<unk>"`` when none)."""
        index = self._index
        if word in index:
            return word
        lower = word.lower()
        if lower in index:
            return lower
        for candidate in stem_candidates(lower):
            if candidate in index:
                return candidate
        return self._by_stem.get(stem(lower), UNK)

    def index(self, word: str) -> int:
        """Index of ``word`` after OOV fallback (``UNK_INDEX`` when nothing matches)."""
        return self._index[self.resolve(word)]

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Indices of ``tokens`` (length preserved)."""
        return [self.index(t) for t in tokens]

    def to_dict(self) -> dict:
        """JSON-ready form: the word list (specials included) and counts."""
        return {"words": self.words, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "vocabulary") -> Vocabulary:
        """Rebuild from :meth:`to_dict`'s output."""
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or words[:2] != [PAD, UNK]:
            raise DataError(f"{source}: expected a 'words' list starting with {PAD!r}, {UNK!r}")
        return cls(words[2:], counts=data.get("counts") or {})

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (atomically)."""
        atomic_write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        data = read_json(path, what="vocabulary file", error=DataError)
        return cls.from_dict(data, source=str(path))
