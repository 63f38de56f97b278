"""Text encoders: one vector per word. MiniLM (default), word2vec/GloVe (the paper), learned.

Build one from its spec with :func:`build_text_encoder`; every encoder's :meth:`spec` rebuilds it.

Spec keys by kind:

* ``{"kind": "minilm", "layers": 1, "max_length": 128, "batch_size": 32, "cache_size": 200000}``
* ``{"kind": "word2vec", "path": FILE, "binary": null, "unk": "zero"}`` reads the file, keeping
  only ``vocabulary``'s words when one is given; a spec that holds ``"words"`` and ``"dim"``
  (what :meth:`spec` returns) rebuilds without the file, its vectors then come from the state dict.
* ``{"kind": "learned", "dim": 300}`` needs ``vocabulary``; a spec with ``"words"`` rebuilds.
"""

from __future__ import annotations

from typing import Any

from acalign.data.captions import Vocabulary
from acalign.errors import ModelError
from acalign.text.base import TextEncoder, pad_word_vectors
from acalign.text.learned import LearnedEmbeddingEncoder
from acalign.text.minilm import MiniLMEncoder
from acalign.text.word2vec import StaticEmbeddingEncoder, read_word_vectors

__all__ = [
    "LearnedEmbeddingEncoder",
    "MiniLMEncoder",
    "StaticEmbeddingEncoder",
    "TextEncoder",
    "build_text_encoder",
    "pad_word_vectors",
    "read_word_vectors",
]

KINDS = ("minilm", "word2vec", "learned")


def build_text_encoder(
    spec: dict[str, Any], *, vocabulary: Vocabulary | None = None
) -> TextEncoder:
    """Build a text encoder from its spec (see the module docstring for the keys).

    Args:
        spec: a dict with ``"kind"`` and that kind's options.
        vocabulary: the training split's vocabulary; required by ``"learned"`` (unless the spec
            holds ``"words"``) and used by ``"word2vec"`` to keep only the needed vectors.

    Raises:
        ModelError: unknown kind or missing/invalid option.
    """
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ModelError(f"text encoder spec must be a dict with a 'kind' key, got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    try:
        if kind == "minilm":
            return MiniLMEncoder(**options)
        if kind == "word2vec":
            return StaticEmbeddingEncoder.from_spec(options, vocabulary=vocabulary)
        if kind == "learned":
            return LearnedEmbeddingEncoder.from_spec(options, vocabulary=vocabulary)
    except TypeError as exc:
        raise ModelError(f"text encoder spec for kind {kind!r}: {exc}") from None
    raise ModelError(f"unknown text encoder kind {kind!r}; expected one of {', '.join(KINDS)}")
