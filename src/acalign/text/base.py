"""The text-encoder interface: one vector per word of each caption.

Every encoder takes token lists (already cleaned, see :mod:`acalign.data.captions`) and returns
one vector per *word*, so a phrase's ``[start_index, end_index]`` span indexes its vectors
directly, whatever the encoder does internally (word pieces, OOV fallback).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from acalign.errors import ModelError
from acalign.tensors import to_device


class TextEncoder(nn.Module, ABC):
    """Base class of all text encoders.

    Attributes:
        kind: the registry name used in :meth:`spec` (``"minilm"``, ``"word2vec"``, ``"learned"``).
        dim: size ``D`` of each word vector.
        trainable: whether the encoder has parameters that training should update.
    """

    kind: ClassVar[str] = ""
    dim: int
    trainable: bool

    @abstractmethod
    def forward(self, tokens: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of token lists.

        Args:
            tokens: ``B`` token lists; an empty list is allowed and gives an all-False mask row.

        Returns:
            ``(vectors, mask)``: ``vectors`` float32 of shape ``(B, W, D)`` with
            ``W = max(len(t) for t in tokens)`` (at least 1) and zeros at padding; ``mask`` bool
            of shape ``(B, W)``, True on real words. Tensors are on the encoder's device.
        """

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable dict from which :func:`acalign.text.build_text_encoder` rebuilds
        this encoder (weights, where it has any, come from the state dict)."""

    def precompute(self, tokens: Sequence[Sequence[str]], *, separate_process: bool = False) -> None:
        """Warm any cache for these captions (a no-op for encoders without one).

        ``separate_process``: compute them in a child process, so that what computing them
        needs (a transformer's weights, its libraries' buffers) never enters this one.
        """

    def release(self) -> None:
        """Free what only uncached captions need (a no-op for encoders without a cache).

        Called once every caption a run will see is cached; an uncached caption later
        reloads what was freed.
        """

    @property
    def device(self) -> torch.device:
        """Device of the encoder's tensors (CPU when it has none)."""
        for tensor in [*self.parameters(), *self.buffers()]:
            return tensor.device
        return torch.device("cpu")


def pad_word_vectors(
    vectors: Sequence[torch.Tensor], *, dim: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-caption ``(W_i, D)`` tensors into ``(B, W, D)`` zero-padded plus a ``(B, W)`` mask.

    ``W`` is at least 1 so that an empty batch row still has a shape.
    """
    width = max([1, *(v.shape[0] for v in vectors)])
    # Host vectors (a cache) are stacked on the host and moved once, not row by row.
    on_host = all(v.device.type == "cpu" for v in vectors)
    build = torch.device("cpu") if on_host or device is None else torch.device(device)
    out = torch.zeros(len(vectors), width, dim, dtype=torch.float32, device=build)
    mask = torch.zeros(len(vectors), width, dtype=torch.bool, device=build)
    for row, vec in enumerate(vectors):
        n = vec.shape[0]
        out[row, :n] = vec.to(device=build, dtype=torch.float32)
        mask[row, :n] = True
    if device is None:
        return out, mask
    return to_device(out, device), to_device(mask, device)


def check_tokens(tokens: Any) -> list[list[str]]:
    """Return ``tokens`` as a list of lists of str, or raise :class:`ModelError` explaining why."""
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise ModelError(
            f"text encoder input must be a list of token lists, got {type(tokens).__name__}"
        )
    out = []
    for row in tokens:
        if isinstance(row, str) or not all(isinstance(t, str) for t in row):
            raise ModelError(
                "text encoder input must be a list of token lists (lists of str), "
                f"got a row of type {type(row).__name__}"
            )
        out.append(list(row))
    return out
