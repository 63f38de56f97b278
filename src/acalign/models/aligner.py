"""The aligner: audio and text encoders, frame–word similarity, clip–caption scores.

``s[t, w] = max(0, cos(a_t, q_w))`` for audio frame ``t`` and caption word ``w``; a clip–caption
score reduces the ``T × W`` matrix over the *valid* frames and words only, so padding either
side never changes a score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from acalign.config import from_dict
from acalign.errors import ModelError
from acalign.models.crnn import CRNN, CRNNConfig, valid_mask
from acalign.tensors import to_device
from acalign.text import TextEncoder, build_text_encoder

REDUCTIONS = ("mean", "max_time_mean_words", "max_words_mean_time")
PHRASE_REDUCTIONS = ("mean", "max")


@dataclass
class AlignerConfig:
    """Configuration of an :class:`Aligner`.

    Attributes:
        audio: the CRNN audio encoder.
        text: the text encoder spec (see :func:`acalign.text.build_text_encoder`).
        joint_dim: project both sides to this size; ``None`` projects the audio side to the text
            size when they differ (so frozen text vectors stay as they are), else no projection.
        reduction: default clip–caption reduction, one of :data:`REDUCTIONS`.
        clamp: clamp similarities at 0 (the paper's ``max(0, cos)``).
    """

    audio: CRNNConfig = field(default_factory=CRNNConfig)
    text: dict[str, Any] = field(default_factory=lambda: {"kind": "minilm"})
    joint_dim: int | None = None
    reduction: str = "mean"
    clamp: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.audio, dict):
            self.audio = from_dict(CRNNConfig, self.audio, source="AlignerConfig.audio")
        check_reduction(self.reduction)
        if self.joint_dim is not None and self.joint_dim < 1:
            raise ModelError(
                f"AlignerConfig: joint_dim must be positive or null, got {self.joint_dim}"
            )


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if known, else raise :class:`ModelError`."""
    if reduction not in REDUCTIONS:
        raise ModelError(
            f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
        )
    return reduction


def reduce_similarity(
    sim: torch.Tensor, a_mask: torch.Tensor, q_mask: torch.Tensor, reduction: str
) -> torch.Tensor:
    """Reduce frame–word similarities over valid frames and words.

    Args:
        sim: ``(..., T, W)`` similarities.
        a_mask: ``(..., T)`` bool, True on real frames (broadcastable against ``sim[..., :, 0]``).
        q_mask: ``(..., W)`` bool, True on real words (broadcastable against ``sim[..., 0, :]``).
        reduction: ``"mean"`` over all valid cells, ``"max_time_mean_words"`` (max over frames,
            then mean over words) or ``"max_words_mean_time"`` (max over words, mean over frames).

    Returns:
        ``(...)`` scores. A side with no valid element gives 0.
    """
    check_reduction(reduction)
    am = a_mask.unsqueeze(-1)  # (..., T, 1)
    qm = q_mask.unsqueeze(-2)  # (..., 1, W)
    cell = am & qm
    if reduction == "mean":
        total = torch.where(cell, sim, 0).sum((-2, -1))
        count = (am.sum(-2) * qm.sum(-1)).squeeze(-1).to(sim.dtype)
        return total / count.clamp_min(1)
    low = torch.finfo(sim.dtype).min
    if reduction == "max_time_mean_words":
        best = torch.where(cell, sim, low).amax(-2)  # (..., W)
        keep = q_mask.expand_as(best)
    else:
        best = torch.where(cell, sim, low).amax(-1)  # (..., T)
        keep = a_mask.expand_as(best)
    best = torch.where(keep & (best > low), best, 0)  # a row with nothing valid counts 0
    return best.sum(-1) / keep.sum(-1).clamp_min(1).to(sim.dtype)


def _masked_block_scores(
    a: torch.Tensor, a_mask: torch.Tensor, q: torch.Tensor, q_mask: torch.Tensor, reduction: str
) -> torch.Tensor:
    """All-pairs scores of unclamped similarities: ``(A, T, D)``, ``(Q, W, D)`` → ``(A, Q)``."""
    sim = torch.einsum("atd,qwd->aqtw", a, q)
    return reduce_similarity(sim, a_mask[:, None, :], q_mask[None, :, :], reduction)


def _clamped_block_scores(
    a: torch.Tensor, a_mask: torch.Tensor, q: torch.Tensor, q_mask: torch.Tensor, reduction: str
) -> torch.Tensor:
    """All-pairs scores of ``max(0, cos)`` similarities: ``(A, T, D)``, ``(Q, W, D)`` → ``(A, Q)``.

    Faster than the masked path, same result: with padded embeddings zeroed, every padded cell
    is exactly 0 and every valid cell ≥ 0, so sums and maxes need no mask, only valid counts;
    one matmul gives the contiguous ``(A, T, Q, W)`` block, clamped in place.
    """
    a = a * a_mask.unsqueeze(-1).to(a.dtype)
    q = q * q_mask.unsqueeze(-1).to(q.dtype)
    (n_a, frames, dim), (n_q, words) = a.shape, q.shape[:2]
    sim = (a.reshape(-1, dim) @ q.reshape(-1, dim).T).view(n_a, frames, n_q, words).clamp_(min=0)
    n_frames = a_mask.sum(1).clamp_min(1).to(torch.float32)[:, None]  # (A, 1)
    n_words = q_mask.sum(1).clamp_min(1).to(torch.float32)[None, :]  # (1, Q)
    # Sums accumulate in float32 also under bf16 autocast.
    if reduction == "mean":
        return sim.sum((1, 3), dtype=torch.float32) / (n_frames * n_words)
    if reduction == "max_time_mean_words":
        return sim.amax(1).sum(-1, dtype=torch.float32) / n_words
    return sim.amax(3).sum(1, dtype=torch.float32) / n_frames


class Aligner(nn.Module):
    """Dual encoder with frame-level audio and word-level text embeddings.

    Example (a trainable text encoder over a training vocabulary)::

        vocab = Vocabulary.from_manifest(clean_manifest(train_manifest))
        text = build_text_encoder({"kind": "learned", "dim": 300}, vocabulary=vocab)
        model = Aligner(AlignerConfig(reduction="max_time_mean_words"), text_encoder=text)
        a, a_mask = model.encode_audio(feats, lengths)          # (B, T, D), (B, T)
        q, q_mask = model.encode_text(tokens)                    # (B, W, D), (B, W)
        scores = model.score_matrix(a, a_mask, q, q_mask)        # (B, B)
        sim = model.frame_word_similarity(a, q)                  # (B, T, W)
        activation = Aligner.phrase_activation(sim[0], phrase.span)  # (T,)
    """

    def __init__(
        self, config: AlignerConfig | None = None, text_encoder: TextEncoder | None = None
    ) -> None:
        """Build from ``config``; ``text_encoder`` (e.g. one built with a vocabulary) replaces
        the one ``config.text`` describes, and ``config.text`` is updated to its spec."""
        super().__init__()
        self.config = config or AlignerConfig()
        self.audio_encoder = CRNN(self.config.audio)
        self.text_encoder = (
            text_encoder if text_encoder is not None else build_text_encoder(self.config.text)
        )
        self.config.text = self.text_encoder.spec()
        audio_dim, text_dim = self.audio_encoder.out_dim, self.text_encoder.dim
        joint = self.config.joint_dim
        self.audio_proj: nn.Module = nn.Identity()
        self.text_proj: nn.Module = nn.Identity()
        if joint is not None:
            self.audio_proj = nn.Linear(audio_dim, joint)
            self.text_proj = nn.Linear(text_dim, joint)
        elif audio_dim != text_dim:
            self.audio_proj = nn.Linear(audio_dim, text_dim)
        self.dim = joint if joint is not None else text_dim

    def encode_audio(
        self, feats: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats (B, T, F)``, ``lengths (B,)`` → ``(emb (B, T, D) L2-normalised, mask (B, T))``.

        Padded frames have zero embeddings.
        """
        # The projection runs on the CRNN's pooled frames, before their interpolation back to
        # T: the same result on a quarter of the rows (16 ten-second windows: 14.1 → 2.7 ms,
        # plus 0.4 ms more to interpolate 384-d instead of 300-d frames).
        frames = self.audio_encoder(feats, lengths, frame_map=self.audio_proj)
        total = feats.shape[1]
        lengths = (
            torch.full((feats.shape[0],), total, device=frames.device)
            if lengths is None
            else to_device(lengths, frames.device)
        )
        mask = valid_mask(lengths, total)
        return F.normalize(frames, dim=-1) * mask.unsqueeze(-1), mask

    def encode_audio_front(self, feats: torch.Tensor) -> torch.Tensor:
        """The local (convolutional) part of :meth:`encode_audio` for unpadded ``feats (B, T,
        F)``: ``(B, T', C)``, one row per ``time_reduction`` input frames. Its rows depend on
        ``audio_encoder.context_frames`` input frames on either side only, so overlapping windows
        of a long recording can share them; finish with :meth:`encode_audio_head`.
        """
        return self.audio_encoder.conv_frames(feats)

    def encode_audio_head(self, front: torch.Tensor, total: int) -> torch.Tensor:
        """The rest of :meth:`encode_audio`: ``front (B, T', C)`` → L2-normalised ``(B, total,
        D)``; ``encode_audio_head(encode_audio_front(f), T)`` equals ``encode_audio(f)[0]``."""
        return F.normalize(self.audio_encoder.recurrent(front, total, frame_map=self.audio_proj), dim=-1)

    def encode_text(self, tokens: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``B`` token lists → ``(emb (B, W, D) L2-normalised, mask (B, W))``; padded words are zero."""
        vectors, mask = self.text_encoder(tokens)
        device = self._device()
        vectors, mask = to_device(vectors, device), to_device(mask, device)
        emb = F.normalize(self.text_proj(vectors).float(), dim=-1) * mask.unsqueeze(-1)
        return emb, mask

    def _device(self) -> torch.device:
        return next(self.audio_encoder.parameters()).device

    def _sim(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.clamp_min(0) if self.config.clamp else raw

    def frame_word_similarity(self, a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Similarities of aligned pairs: ``a (B, T, D)``, ``q (B, W, D)`` → ``(B, T, W)``.

        Both normalised; ``max(0, cos)`` when ``config.clamp``. Padded rows/columns are 0 for
        embeddings from :meth:`encode_audio` / :meth:`encode_text` (they zero their padding).
        """
        return self._sim(torch.einsum("btd,bwd->btw", a, q))

    def score_pairs(
        self,
        a: torch.Tensor,
        a_mask: torch.Tensor,
        q: torch.Tensor,
        q_mask: torch.Tensor,
        reduction: str | None = None,
    ) -> torch.Tensor:
        """Scores of aligned pairs (clip ``i`` with caption ``i``) → ``(B,)``."""
        sim = self.frame_word_similarity(a, q)
        return reduce_similarity(sim, a_mask, q_mask, reduction or self.config.reduction)

    def score_matrix(
        self,
        a: torch.Tensor,
        a_mask: torch.Tensor,
        q: torch.Tensor,
        q_mask: torch.Tensor,
        reduction: str | None = None,
        *,
        max_elements: int = 1 << 24,
    ) -> torch.Tensor:
        """Scores of every clip with every caption → ``(Na, Nq)``.

        Args:
            a: ``(Na, T, D)`` audio embeddings, ``a_mask`` ``(Na, T)``.
            q: ``(Nq, W, D)`` caption embeddings, ``q_mask`` ``(Nq, W)``.
            reduction: one of :data:`REDUCTIONS` (default: the config's).
            max_elements: bound on the ``clips × captions × T × W`` similarity block computed at
                once (memory ≈ 4 bytes × this, a few times over), by chunking both sides.
        """
        reduction = check_reduction(reduction or self.config.reduction)
        n_audio, frames = a.shape[:2]
        n_text, words = q.shape[:2]
        per_pair = max(1, frames * words)
        text_chunk = max(1, min(n_text, max_elements // per_pair))
        audio_chunk = max(1, max_elements // (per_pair * text_chunk))
        block = _clamped_block_scores if self.config.clamp else _masked_block_scores
        out = a.new_empty(n_audio, n_text, dtype=torch.float32)
        for i in range(0, n_audio, audio_chunk):
            ai, ami = a[i : i + audio_chunk], a_mask[i : i + audio_chunk]
            for j in range(0, n_text, text_chunk):
                qj, qmj = q[j : j + text_chunk], q_mask[j : j + text_chunk]
                out[i : i + audio_chunk, j : j + text_chunk] = block(ai, ami, qj, qmj, reduction)
        return out

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor | None,
        tokens: Sequence[Sequence[str]],
        reduction: str | None = None,
    ) -> torch.Tensor:
        """Encode a batch and score every clip with every caption → ``(B, B)`` (for training)."""
        a, a_mask = self.encode_audio(feats, lengths)
        q, q_mask = self.encode_text(tokens)
        return self.score_matrix(a, a_mask, q, q_mask, reduction, max_elements=1 << 62)

    @staticmethod
    def phrase_activation(sim: torch.Tensor, span: slice, how: str = "mean") -> torch.Tensor:
        """Per-frame activation of a phrase: ``sim (T, W)`` reduced over ``span``'s words → ``(T,)``.

        ``how`` is ``"mean"`` or ``"max"`` over the phrase's words.
        """
        if how not in PHRASE_REDUCTIONS:
            raise ModelError(f"unknown phrase reduction {how!r}; expected 'mean' or 'max'")
        words = sim[:, span]
        if words.shape[1] == 0:
            raise ModelError(f"phrase span {span} selects no word of a {sim.shape[1]}-word caption")
        return words.mean(-1) if how == "mean" else words.amax(-1)
