"""Losses against hand-computed values on tiny score matrices."""

from __future__ import annotations

import math

import pytest
import torch

from acalign.errors import ModelError
from acalign.models.losses import LogitScale, frame_bce_loss, info_nce_loss, triplet_ranking_loss


def test_triplet_two_clips_hand_computed():
    scores = torch.tensor([[0.9, 0.3], [0.5, 0.6]], requires_grad=True)
    loss = triplet_ranking_loss(scores, torch.tensor([0, 1]), margin=1.0)
    # row 0: (1 - .9 + .3) + (1 - .9 + .5) = 1.0; row 1: (1 - .6 + .5) + (1 - .6 + .3) = 1.6
    assert loss.item() == pytest.approx((1.0 + 1.6) / 2)
    loss.backward()
    assert scores.grad[0, 0].item() == pytest.approx(-1.0)  # two hinge terms / batch of 2


def test_triplet_hinge_is_zero_past_the_margin():
    scores = torch.tensor([[3.0, 0.1], [0.2, 2.5]])
    assert triplet_ranking_loss(scores, [0, 1], margin=1.0).item() == 0.0


def test_triplet_impostors_come_from_other_clips_only():
    scores = torch.tensor([[1.0, 1.0, 0.2], [1.0, 1.0, 0.4], [0.1, 0.3, 0.5]])
    fixed = 0.2 + 0.1 + 0.4 + 0.3  # rows 0 and 1 (same clip) can only use row 2
    allowed = {round((fixed + c + a) / 3, 5) for c in (0.6, 0.8) for a in (0.7, 0.9)}
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss = triplet_ranking_loss(scores, ["clip-a", "clip-a", "clip-b"], generator=gen)
        seen.add(round(loss.item(), 5))
    assert seen == allowed  # all four impostor combinations of row 2 drawn, nothing else


def test_triplet_single_clip_batch_terminates_with_zero():
    # The reference redrew impostors until it found another clip: an endless loop here.
    scores = torch.rand(3, 3, requires_grad=True)
    loss = triplet_ranking_loss(scores, torch.tensor([5, 5, 5]))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.all(scores.grad == 0)


def test_triplet_is_reproducible_with_a_generator():
    scores = torch.rand(8, 8, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    first = triplet_ranking_loss(scores, ids, generator=torch.Generator().manual_seed(3))
    second = triplet_ranking_loss(scores, ids, generator=torch.Generator().manual_seed(3))
    assert first.item() == second.item()


def test_losses_reject_bad_shapes():
    with pytest.raises(ModelError, match="square"):
        triplet_ranking_loss(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ModelError, match="clip_ids"):
        info_nce_loss(torch.zeros(2, 2), [0, 1, 2], logit_scale=1.0)
    with pytest.raises(ModelError, match="differ in shape"):
        frame_bce_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_info_nce_hand_computed():
    a, b, c, d = 0.9, 0.2, 0.4, 0.7
    scores = torch.tensor([[a, b], [c, d]])
    loss = info_nce_loss(scores, [0, 1], logit_scale=2.0)
    rows = (_ce([2 * a, 2 * b], 0) + _ce([2 * c, 2 * d], 1)) / 2
    cols = (_ce([2 * a, 2 * c], 0) + _ce([2 * b, 2 * d], 1)) / 2
    assert loss.item() == pytest.approx((rows + cols) / 2, abs=1e-6)


def test_info_nce_masks_captions_of_the_same_clip():
    s = [[0.9, 0.8, 0.1], [0.7, 0.6, 0.2], [0.3, 0.4, 0.5]]
    loss = info_nce_loss(torch.tensor(s), [0, 0, 1], logit_scale=1.0)
    rows = (_ce([s[0][0], s[0][2]], 0) + _ce([s[1][1], s[1][2]], 0) + _ce(s[2], 2)) / 3
    cols = (
        _ce([s[0][0], s[2][0]], 0)
        + _ce([s[1][1], s[2][1]], 0)
        + _ce([s[0][2], s[1][2], s[2][2]], 2)
    ) / 3
    assert loss.item() == pytest.approx((rows + cols) / 2, abs=1e-6)


def test_logit_scale_init_cap_and_gradient():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    loss = info_nce_loss(torch.tensor([[0.9, 0.2], [0.4, 0.7]]), [0, 1], logit_scale=scale())
    loss.backward()
    assert scale.log_scale.grad is not None and scale.log_scale.grad.item() != 0
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale().item() == pytest.approx(100.0, rel=1e-5)
    with pytest.raises(ModelError):
        LogitScale(init=200.0, max=100.0)


def test_frame_bce_hand_computed_with_mask():
    activations = torch.tensor([[0.5, 0.8, 0.0, 0.9]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss = frame_bce_loss(activations, targets, mask)
    expected = (-math.log(0.5) - math.log(0.2) - math.log(1 - 1e-6)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    unmasked = frame_bce_loss(activations, targets)
    assert unmasked.item() == pytest.approx((expected * 3 - math.log(0.9)) / 4, rel=1e-5)
    # exact 0 and 1 activations (clamped cosine) stay finite
    assert torch.isfinite(frame_bce_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])))
