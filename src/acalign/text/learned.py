"""A trainable word-embedding table over the training split's vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from acalign.data.captions import PAD_INDEX, Vocabulary
from acalign.errors import ModelError
from acalign.tensors import to_device
from acalign.text.base import TextEncoder, check_tokens


class LearnedEmbeddingEncoder(TextEncoder):
    """``nn.Embedding`` over ``vocabulary`` (``<pad>`` row fixed at zero); OOV words fall back
    to a stem, then ``<unk>``, via :meth:`Vocabulary.index`."""

    kind = "learned"

    def __init__(self, vocabulary: Vocabulary, *, dim: int = 300) -> None:
        """Args:
        vocabulary: built from the training split only.
        dim: embedding size ``D``.
        """
        super().__init__()
        if dim <= 0:
            raise ModelError(f"learned text encoder: dim must be positive, got {dim}")
        self.vocabulary = vocabulary
        self.dim = int(dim)
        self.trainable = True
        self.embedding = nn.Embedding(len(vocabulary), self.dim, padding_idx=PAD_INDEX)

    @classmethod
    def from_spec(
        cls, options: dict[str, Any], *, vocabulary: Vocabulary | None = None
    ) -> LearnedEmbeddingEncoder:
        """Build from a spec's options: ``dim`` and either ``words`` or the given vocabulary."""
        options = dict(options)
        words = options.pop("words", None)
        if words is not None:
            vocabulary = Vocabulary.from_dict({"words": words}, source="learned text encoder spec")
        if vocabulary is None:
            raise ModelError(
                "learned text encoder needs a vocabulary (build one from the training split)"
            )
        return cls(vocabulary, **options)

    def forward(self, tokens: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up ``B`` token lists → ``(vectors (B, W, D) float32, mask (B, W) bool)``."""
        rows = check_tokens(tokens)
        width = max([1, *(len(r) for r in rows)])
        device = self.embedding.weight.device
        ids = torch.full((len(rows), width), PAD_INDEX, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(self.vocabulary.encode(row), dtype=torch.long)
            mask[i, : len(row)] = True
        ids, mask = to_device(ids, device), to_device(mask, device)
        vectors = self.embedding(ids).float() * mask.unsqueeze(-1)
        return vectors, mask

    def spec(self) -> dict[str, Any]:
        """``{"kind": "learned", "dim": D, "words": [...]}``."""
        return {"kind": self.kind, "dim": self.dim, "words": list(self.vocabulary.words)}
