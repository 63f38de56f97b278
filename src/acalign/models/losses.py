"""Training losses over a batch's clip–caption score matrix.

``scores[i, j]`` is the score of audio ``i`` with caption ``j``; pair ``i`` (the diagonal) is a
true pair. ``clip_ids`` says which clip each row's audio is: a batch may hold several captions
of one clip, and those are never treated as negatives of each other.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from acalign.errors import ModelError
from acalign.tensors import to_device


def clip_id_tensor(
    clip_ids: torch.Tensor | Sequence[Hashable], *, device: torch.device | None = None
) -> torch.Tensor:
    """``(B,)`` long tensor of clip ids from a tensor or any sequence of hashables (e.g. str)."""
    if isinstance(clip_ids, torch.Tensor):
        ids = clip_ids.to(torch.long)
        return ids if device is None else to_device(ids, device)
    codes: dict[Hashable, int] = {}
    return torch.tensor(
        [codes.setdefault(c, len(codes)) for c in clip_ids], dtype=torch.long, device=device
    )


def _other_clip(scores: torch.Tensor, clip_ids: torch.Tensor | Sequence[Hashable]) -> torch.Tensor:
    """``(B, B)`` bool: True where row and column come from different clips."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ModelError(f"scores must be a square (B, B) matrix, got {tuple(scores.shape)}")
    ids = clip_id_tensor(clip_ids, device=scores.device)
    if ids.shape != (scores.shape[0],):
        raise ModelError(f"clip_ids must have {scores.shape[0]} entries, got {tuple(ids.shape)}")
    return ids[:, None] != ids[None, :]


def triplet_ranking_loss(
    scores: torch.Tensor,
    clip_ids: torch.Tensor | Sequence[Hashable],
    *,
    margin: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's triplet ranking loss with one random impostor of each kind per pair.

    For pair ``i``, draw an impostor caption ``j`` and an impostor audio ``k`` uniformly among
    the batch's rows from *other clips*; the pair's loss is
    ``max(0, margin - s[i, i] + s[i, j]) + max(0, margin - s[i, i] + s[k, i])``, averaged over
    the batch. Sampling is one vectorised draw (the reference redrew until it found another
    clip, which never ends on a batch holding a single clip; such a batch gives 0 here).

    Args:
        scores: ``(B, B)`` score matrix.
        clip_ids: ``(B,)`` clip of each row (tensor or sequence of hashables).
        margin: hinge margin.
        generator: RNG for the impostor draws (on ``scores``' device).

    Returns:
        scalar loss (connected to ``scores``' graph, also when it is 0).
    """
    ids = clip_id_tensor(clip_ids)  # sequences become host tensors; tensors stay where they are
    other = _other_clip(scores, ids)
    # A row lacks an impostor only when every row shows the same clip, so it is all or none.
    # Asked of host ids, the question costs a GPU no sync.
    if ids.device.type == "cpu":
        single_clip = bool((ids == ids[0]).all()) if len(ids) else True
    else:
        single_clip = not bool(other.any())
    if single_clip:
        return scores.sum() * 0.0
    weights = other.float()
    impostor_caption = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    impostor_audio = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    positive = scores.diagonal()
    caption_term = (margin - positive + scores[rows, impostor_caption]).clamp_min(0)
    audio_term = (margin - positive + scores[impostor_audio, rows]).clamp_min(0)
    return (caption_term + audio_term).sum() / scores.shape[0]


class LogitScale(nn.Module):
    """Learnable inverse temperature for :func:`info_nce_loss`, stored as a log, capped at ``max``."""

    def __init__(self, init: float = 1 / 0.07, max: float = 100.0) -> None:  # noqa: A002 - CLIP's name
        """Start at ``init`` (CLIP's 1/0.07); never exceed ``max``."""
        super().__init__()
        if not 0 < init <= max:
            raise ModelError(f"LogitScale: need 0 < init <= max, got init={init}, max={max}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))
        self.max_log = math.log(max)

    def forward(self) -> torch.Tensor:
        """The current scale, a scalar tensor."""
        return self.log_scale.clamp(max=self.max_log).exp()


def info_nce_loss(
    scores: torch.Tensor,
    clip_ids: torch.Tensor | Sequence[Hashable],
    *,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (audio→caption and caption→audio cross-entropy, averaged).

    Other captions of pair ``i``'s clip (and, for caption→audio, other rows holding the same
    clip's audio) are removed from the softmax: they are not negatives.

    Args:
        scores: ``(B, B)`` score matrix.
        clip_ids: ``(B,)`` clip of each row.
        logit_scale: multiplies the scores (e.g. ``LogitScale()()``).

    Returns:
        scalar loss.
    """
    other = _other_clip(scores, clip_ids)
    keep = other | torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    logits = (scores * logit_scale).masked_fill(~keep, float("-inf"))
    target = torch.arange(len(scores), device=scores.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def frame_bce_loss(
    activations: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Frame-level binary cross-entropy of activations in [0, 1] against strong labels.

    For the supervised upper bound: ``activations (B, T)`` (e.g. a phrase's clamped-cosine
    activation), ``targets (B, T)`` in {0, 1}, ``mask (B, T)`` bool of valid frames (None = all).
    Activations are clipped to ``[eps, 1 - eps]``; the mean is over valid frames.
    """
    if activations.shape != targets.shape:
        raise ModelError(
            f"activations {tuple(activations.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    probs = activations.float().clamp(eps, 1 - eps)
    loss = F.binary_cross_entropy(probs, targets.float(), reduction="none")
    if mask is None:
        return loss.mean()
    weight = mask.to(loss.dtype)
    return (loss * weight).sum() / weight.sum().clamp_min(1)
