"""Frozen static word vectors from a word2vec or GloVe file (the paper's text encoder).

We read the files ourselves instead of depending on gensim: gensim is a large dependency
(and not installed here) only to parse two simple formats, and we want a single pass that keeps
just the vectors of the training vocabulary, so that the GoogleNews file (3 M words × 300,
3.6 GB) never has to sit in memory.

Formats: text with a ``"count dim"`` header line (word2vec text), text without a header (GloVe),
and word2vec binary (header, then per word ``b"word "`` + ``dim`` little-endian float32, with an
optional newline). Detected from the content unless ``binary`` is given.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acalign.data.captions import PAD_INDEX, UNK_INDEX, Vocabulary, stem, stem_candidates
from acalign.errors import DataError, ModelError
from acalign.tensors import to_device
from acalign.text.base import TextEncoder, check_tokens

log = logging.getLogger(__name__)

UNK_CHOICES = ("zero", "mean")
_HEADER_RE = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")


def read_word_vectors(
    path: str | os.PathLike,
    *,
    binary: bool | None = None,
    keep: Collection[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Read a word2vec/GloVe file.

    Args:
        path: the file.
        binary: ``True`` for word2vec binary, ``False`` for text, ``None`` to detect.
        keep: when given, only these words are returned (the rest are skipped unparsed).

    Returns:
        ``(words, vectors)`` with ``vectors`` float32 of shape ``(len(words), dim)``; the first
        occurrence of a repeated word wins.

    Raises:
        DataError: missing file, or content in neither format.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: word-vector file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: word-vector file is empty")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header, body_start = _read_header(data)
        if binary is None:
            binary = header is not None and _looks_binary(data, body_start, header[1])
        if binary:
            if header is None:
                raise DataError(f"{path}: word2vec binary file lacks its 'count dim' header line")
            return _read_binary(data, body_start, header, keep, path)
        return _read_text(data, body_start, header, keep, path)


def _read_header(data: mmap.mmap) -> tuple[tuple[int, int] | None, int]:
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    match = _HEADER_RE.match(data[:end])
    if match:
        return (int(match.group(1)), int(match.group(2))), end + 1
    return None, 0


def _looks_binary(data: mmap.mmap, start: int, dim: int) -> bool:
    """A text body's first line is a word and ``dim`` decimal numbers."""
    end = data.find(b"\n", start)
    line = data[start : end if end >= 0 else len(data)]
    try:
        parts = line.decode("utf-8").rstrip().rsplit(" ", dim)
        [float(x) for x in parts[1:]]
    except (UnicodeDecodeError, ValueError):
        return True
    return len(parts) != dim + 1


def _read_binary(
    data: mmap.mmap,
    pos: int,
    header: tuple[int, int],
    keep: Collection[str] | None,
    path: Path,
) -> tuple[list[str], np.ndarray]:
    count, dim = header
    row_bytes = 4 * dim
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    for _ in range(count):
        while pos < len(data) and data[pos : pos + 1] in (b"\n", b"\r"):
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + row_bytes > len(data):
            raise DataError(f"{path}: word2vec binary file ends early (header says {count} words)")
        word = data[pos:space].decode("utf-8", errors="replace")
        pos = space + 1
        if (keep is None or word in keep) and word not in seen:
            seen.add(word)
            words.append(word)
            rows.append(np.frombuffer(data[pos : pos + row_bytes], dtype="<f4").copy())
        pos += row_bytes
    return words, _stack(rows, dim)


def _read_text(
    data: mmap.mmap,
    pos: int,
    header: tuple[int, int] | None,
    keep: Collection[str] | None,
    path: Path,
) -> tuple[list[str], np.ndarray]:
    dim = header[1] if header else None
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    data.seek(pos)
    for line_no, raw in enumerate(iter(data.readline, b""), start=2 if header else 1):
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not line:
            continue
        if dim is None:
            dim = len(line.split(" ")) - 1
            if dim < 1:
                raise DataError(f"{path}:{line_no}: expected a word followed by numbers")
        # Tokens never hold spaces, so the first field decides (a GloVe word with spaces is skipped).
        if keep is not None and line.partition(" ")[0] not in keep:
            continue
        parts = line.rsplit(" ", dim)
        word = parts[0]
        if word in seen:
            continue
        try:
            vector = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise DataError(f"{path}:{line_no}: not a word followed by {dim} numbers") from None
        if vector.shape != (dim,):
            raise DataError(f"{path}:{line_no}: expected {dim} numbers, found {vector.shape[0]}")
        seen.add(word)
        words.append(word)
        rows.append(vector)
    return words, _stack(rows, dim or 0)


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack(rows).astype(np.float32, copy=False)


def _lookup_keys(word: str) -> list[str]:
    """File entries tried first for a vocabulary word: itself, lowercase, capitalised, stems."""
    keys = [word, word.lower(), word.capitalize()]
    keys += stem_candidates(word)
    return list(dict.fromkeys(keys))


class _WordsOrStems:
    """A ``keep`` set for :func:`read_word_vectors`: these words, or any word with one of these stems."""

    def __init__(self, words: set[str], stems: set[str]) -> None:
        self.words, self.stems = words, stems

    def __contains__(self, word: object) -> bool:
        return word in self.words or (isinstance(word, str) and stem(word) in self.stems)


def _find_vector(
    word: str, table: dict[str, np.ndarray], by_stem: dict[str, str]
) -> np.ndarray | None:
    """The file's vector for a vocabulary word: exact, case variants, stems, or a same-stem word."""
    for key in _lookup_keys(word):
        if key in table:
            return table[key]
    other = by_stem.get(stem(word))
    return table[other] if other is not None else None


class StaticEmbeddingEncoder(TextEncoder):
    """Frozen word vectors restricted to a vocabulary; ``<pad>`` is the zero vector.

    Unknown words map (via :meth:`Vocabulary.index`: stem fallback first) to ``<unk>``, whose
    vector is, by ``unk``:

    * ``"zero"`` (default) — the zero vector. After L2 normalisation it stays zero, so an unknown
      word has similarity 0 to every frame: it carries no evidence either way and is stable
      across runs, unlike a random vector whose chance similarities would add noise;
    * ``"mean"`` — the mean of the vocabulary's vectors.

    The vectors live in a buffer (``weight``, ``(V, D)``) of the state dict, so an exported
    model reloads from :meth:`spec` + state dict without the original file.
    """

    kind = "word2vec"

    def __init__(
        self, vocabulary: Vocabulary, *, dim: int, unk: str = "zero", source: str | None = None
    ) -> None:
        """An encoder with all-zero vectors of shape ``(len(vocabulary), dim)``, to be filled by
        :meth:`from_file` or ``load_state_dict``."""
        super().__init__()
        if unk not in UNK_CHOICES:
            raise ModelError(
                f"word2vec text encoder: unk must be one of {UNK_CHOICES}, got {unk!r}"
            )
        if dim <= 0:
            raise ModelError(f"word2vec text encoder: dim must be positive, got {dim}")
        self.vocabulary = vocabulary
        self.dim = int(dim)
        self.unk = unk
        self.source = source
        self.trainable = False
        self.register_buffer("weight", torch.zeros(len(vocabulary), self.dim))

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        vocabulary: Vocabulary | None = None,
        binary: bool | None = None,
        unk: str = "zero",
    ) -> StaticEmbeddingEncoder:
        """Read ``path`` keeping only the vectors ``vocabulary`` needs (all words if ``None``).

        A vocabulary word missing from the file is looked up lowercased, capitalised and by
        stem candidates; if still missing it gets the ``<unk>`` vector.
        """
        keep = None
        if vocabulary is not None:
            wanted = vocabulary.words[2:]
            keep = _WordsOrStems(
                {k for w in wanted for k in _lookup_keys(w)}, {stem(w) for w in wanted}
            )
        words, vectors = read_word_vectors(path, binary=binary, keep=keep)
        if vectors.shape[0] == 0:
            raise DataError(f"{path}: no vector found for any vocabulary word")
        if vocabulary is None:
            vocabulary = Vocabulary(words)
        encoder = cls(vocabulary, dim=vectors.shape[1], unk=unk, source=str(path))
        encoder._fill(dict(zip(words, vectors, strict=True)), str(path))
        return encoder

    def _fill(self, table: dict[str, np.ndarray], source: str) -> None:
        weight = torch.zeros(len(self.vocabulary), self.dim)
        found = torch.zeros(len(self.vocabulary), dtype=torch.bool)
        by_stem: dict[str, str] = {}
        for word in table:
            by_stem.setdefault(stem(word), word)
        for index, word in enumerate(self.vocabulary.words[2:], start=2):
            vector = _find_vector(word, table, by_stem)
            if vector is not None:
                weight[index] = torch.from_numpy(vector)
                found[index] = True
        unk_vector = weight[found].mean(0) if self.unk == "mean" else torch.zeros(self.dim)
        weight[~found] = unk_vector
        weight[PAD_INDEX] = 0.0
        weight[UNK_INDEX] = unk_vector
        self.weight.copy_(weight)
        missing = len(self.vocabulary) - 2 - int(found.sum())
        if missing:
            log.info(
                "%s: %d of %d vocabulary words have no vector (use <unk>)",
                source,
                missing,
                len(self.vocabulary) - 2,
            )

    @classmethod
    def from_spec(
        cls, options: dict[str, Any], *, vocabulary: Vocabulary | None = None
    ) -> StaticEmbeddingEncoder:
        """Build from a spec's options: with ``words`` + ``dim`` an empty table to be filled from
        a state dict; else read ``path`` restricted to ``vocabulary``."""
        options = dict(options)
        words = options.pop("words", None)
        if words is not None:
            if "dim" not in options:
                raise ModelError("word2vec text encoder spec with 'words' needs 'dim'")
            vocab = Vocabulary.from_dict({"words": words}, source="word2vec text encoder spec")
            return cls(
                vocab,
                dim=options["dim"],
                unk=options.get("unk", "zero"),
                source=options.get("path"),
            )
        if "path" not in options:
            raise ModelError("word2vec text encoder spec needs 'path' (a word2vec/GloVe file)")
        unknown = set(options) - {"path", "binary", "unk", "dim"}
        if unknown:
            raise ModelError(f"word2vec text encoder spec: unknown option(s) {sorted(unknown)}")
        return cls.from_file(
            options["path"],
            vocabulary=vocabulary,
            binary=options.get("binary"),
            unk=options.get("unk", "zero"),
        )

    def forward(self, tokens: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up ``B`` token lists → ``(vectors (B, W, D) float32, mask (B, W) bool)``."""
        rows = check_tokens(tokens)
        width = max([1, *(len(r) for r in rows)])
        ids = torch.full((len(rows), width), PAD_INDEX, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(self.vocabulary.encode(row), dtype=torch.long)
            mask[i, : len(row)] = True
        ids, mask = to_device(ids, self.weight.device), to_device(mask, self.weight.device)
        return self.weight[ids].float(), mask

    def spec(self) -> dict[str, Any]:
        """``{"kind": "word2vec", "dim", "unk", "path", "words"}`` — rebuilds without the file."""
        return {
            "kind": self.kind,
            "dim": self.dim,
            "unk": self.unk,
            "path": self.source,
            "words": list(self.vocabulary.words),
        }
