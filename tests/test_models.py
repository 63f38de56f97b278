"""CRNN audio encoder and Aligner: shapes, parameter count, padding invariance, reductions."""

from __future__ import annotations

import copy

import pytest
import torch

from acalign.config import from_dict, to_dict
from acalign.data.captions import Vocabulary
from acalign.errors import ModelError
from acalign.models import CRNN, Aligner, AlignerConfig, CRNNConfig, reduce_similarity
from acalign.models.crnn import (
    MaskedBatchNorm2d,
    count_parameters,
    interpolate_per_clip,
    valid_mask,
)
from acalign.models.losses import triplet_ranking_loss
from acalign.text import LearnedEmbeddingEncoder

SMALL = CRNNConfig(
    n_mels=16,
    channels=(4, 8, 8, 8, 8),
    pools=((2, 2), (1, 1), (2, 2), (1, 1), (1, 4)),
    gru_hidden=8,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def log_mel_like(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Values in the range of real log-mel energies (silence about -20 to -36)."""
    return torch.randn(*shape, generator=generator) * 4 - 20


def test_paper_crnn_parameter_count():
    model = CRNN(CRNNConfig())
    n = count_parameters(model)
    print(f"CRNN paper config: {n:,} parameters")
    assert n == 732_354
    assert count_parameters(model.gru) == 252_000
    assert n - count_parameters(model.gru) == 480_354
    assert model.out_dim == 300


def test_crnn_config_round_trips_through_dict():
    config = CRNNConfig(gru_hidden=20)
    rebuilt = from_dict(CRNNConfig, to_dict(config))
    assert rebuilt == config
    assert rebuilt.time_reduction == 4 and rebuilt.freq_out == 1


def test_crnn_config_rejects_bad_shapes():
    with pytest.raises(ModelError, match="pools"):
        CRNNConfig(pools=((2, 4),))
    with pytest.raises(ModelError, match="leaves no bin"):
        CRNNConfig(n_mels=8)


def test_crnn_output_shape_and_zero_padding():
    gen = torch.Generator().manual_seed(0)
    model = CRNN(SMALL).eval()
    feats = log_mel_like(gen, 3, 37, 16)
    out = model(feats, torch.tensor([37, 20, 3]))
    assert out.shape == (3, 37, 16) and out.dtype == torch.float32
    assert torch.all(out[1, 20:] == 0) and torch.all(out[2, 3:] == 0)
    with pytest.raises(ModelError, match="mel bins"):
        model(torch.zeros(1, 10, 64))
    with pytest.raises(ModelError, match="lengths"):
        model(feats, torch.tensor([37, 38, 1]))


@pytest.mark.parametrize("pad_value", [0.0, -100.0])
def test_crnn_padding_never_changes_a_clip(pad_value):
    gen = torch.Generator().manual_seed(1)
    model = CRNN(CRNNConfig()).eval()
    lengths = torch.tensor([251, 163, 97, 2])
    feats = log_mel_like(gen, 4, 251, 64)
    for i, n in enumerate(lengths.tolist()):
        feats[i, n:] = pad_value
    batch = model(feats, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = model(feats[i : i + 1, :n], lengths[i : i + 1])
        torch.testing.assert_close(batch[i, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_crnn_training_mode_ignores_padding_in_batchnorm_and_grads_are_finite():
    gen = torch.Generator().manual_seed(2)
    model = CRNN(SMALL)
    model.dropout.p = 0.0
    feats = log_mel_like(gen, 2, 24, 16)
    lengths = torch.tensor([24, 11])
    padded = torch.cat([feats, torch.zeros(2, 16, 16)], dim=1)  # extra padding frames
    a = copy.deepcopy(model).train()(feats, lengths)
    b = copy.deepcopy(model).train()(padded, lengths)
    torch.testing.assert_close(a, b[:, :24], atol=1e-5, rtol=1e-5)
    b.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_masked_batchnorm_equals_batchnorm_over_valid_frames_only():
    gen = torch.Generator().manual_seed(9)
    x = (torch.randn(3, 5, 7, 4, generator=gen) * 4 - 20).requires_grad_()
    valid = valid_mask(torch.tensor([7, 4, 2]), 7)
    masked_bn = MaskedBatchNorm2d(5)
    with torch.no_grad():
        masked_bn.weight.uniform_(0.5, 1.5, generator=gen)
        masked_bn.bias.uniform_(-1, 1, generator=gen)
    plain_bn = torch.nn.BatchNorm2d(5)
    plain_bn.load_state_dict(masked_bn.state_dict())
    out = masked_bn(x, valid)
    # the valid frames of all clips side by side along time, no padding at all
    joined = torch.cat([x[0:1, :, :7], x[1:2, :, :4], x[2:3, :, :2]], dim=2)
    ref = plain_bn(joined)
    torch.testing.assert_close(out[0], ref[0, :, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, :4], ref[0, :, 7:11], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked_bn.running_mean, plain_bn.running_mean)
    torch.testing.assert_close(masked_bn.running_var, plain_bn.running_var, atol=1e-4, rtol=1e-5)
    grad_ours = torch.autograd.grad((out[0] ** 2).sum() + out[1, :, :4].sum(), x)[0]
    grad_ref = torch.autograd.grad((ref[0, :, :7] ** 2).sum() + ref[0, :, 7:11].sum(), x)[0]
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-5, rtol=1e-4)


def test_interpolation_matches_torch_for_one_clip():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 9, 5, generator=gen)
    ours = interpolate_per_clip(x, torch.tensor([9]), torch.tensor([37]), 37)
    ref = torch.nn.functional.interpolate(
        x.transpose(1, 2), size=37, mode="linear", align_corners=False
    )
    torch.testing.assert_close(ours, ref.transpose(1, 2))


def test_crnn_channels_last_and_bf16_autocast():
    gen = torch.Generator().manual_seed(4)
    model = CRNN(SMALL).eval()
    feats = log_mel_like(gen, 2, 40, 16)
    lengths = torch.tensor([40, 25])
    reference = model(feats, lengths)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(feats, lengths), reference, atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(feats, lengths)
    assert low.dtype == torch.float32
    assert torch.allclose(low, reference, atol=0.1)
    assert torch.all(low[1, 25:] == 0)


# --------------------------------------------------------------------------- aligner


def tiny_aligner(reduction: str = "mean", **kwargs) -> Aligner:
    vocab = Vocabulary.build(
        [["a", "dog", "barks", "cat", "meows", "engine", "idles", "bird", "sings"]]
    )
    text = LearnedEmbeddingEncoder(vocab, dim=12)
    config = AlignerConfig(
        audio=copy.deepcopy(SMALL), text=text.spec(), reduction=reduction, **kwargs
    )
    return Aligner(config, text_encoder=text)


def test_aligner_projects_audio_to_text_dim_and_normalises():
    model = tiny_aligner().eval()
    assert model.dim == 12  # audio (16) projected to the text size
    gen = torch.Generator().manual_seed(5)
    a, a_mask = model.encode_audio(log_mel_like(gen, 2, 30, 16), torch.tensor([30, 17]))
    q, q_mask = model.encode_text([["a", "dog", "barks"], ["cat"]])
    assert a.shape == (2, 30, 12) and q.shape == (2, 3, 12)
    torch.testing.assert_close(a[a_mask].norm(dim=-1), torch.ones(int(a_mask.sum())))
    assert torch.all(a[1, 17:] == 0) and torch.all(q[1, 1:] == 0)
    sim = model.frame_word_similarity(a, q)
    assert sim.shape == (2, 30, 3) and bool((sim >= 0).all()) and bool((sim <= 1 + 1e-6).all())


@pytest.mark.parametrize("config", [SMALL, CRNNConfig()], ids=["small", "paper"])
def test_conv_frames_of_overlapping_pieces_equal_the_whole(config):
    """context_frames is just enough: pieces that overlap by it give the whole's rows exactly."""
    gen = torch.Generator().manual_seed(3)
    model = CRNN(config).eval()
    step, context = config.time_reduction, model.context_frames
    assert context % step == 0 and (config != CRNNConfig() or context == 16)
    feats = log_mel_like(gen, 1, 40 * step + 3, config.n_mels)
    with torch.no_grad():
        whole = model.conv_frames(feats)
        rows = slice(12, 25)  # far from both ends
        piece = model.conv_frames(feats[:, rows.start * step - context : rows.stop * step + context])
        short = model.conv_frames(
            feats[:, rows.start * step - context + step : rows.stop * step + context - step]
        )
    assert whole.shape[1] == (40 * step + 3) // step
    n = context // step
    torch.testing.assert_close(piece[:, n:-n], whole[:, rows], rtol=1e-5, atol=1e-5)
    # one reduction step less of context on each side changes the edge rows: the test can fail
    assert not torch.allclose(short[:, n - 1], whole[:, rows.start], atol=1e-5)


def test_audio_front_and_head_together_equal_encode_audio():
    model = tiny_aligner().eval()
    gen = torch.Generator().manual_seed(6)
    feats = log_mel_like(gen, 2, 30, 16)
    with torch.no_grad():
        split = model.encode_audio_head(model.encode_audio_front(feats), 30)
        whole, _ = model.encode_audio(feats)
    torch.testing.assert_close(split, whole, rtol=0, atol=0)
    with pytest.raises(ModelError, match="at least 4 frames"):
        model.encode_audio_front(feats[:, :3])


def test_aligner_joint_dim_and_config_round_trip():
    model = tiny_aligner(joint_dim=6)
    assert model.dim == 6
    rebuilt = from_dict(AlignerConfig, to_dict(model.config))
    assert rebuilt == model.config
    assert Aligner(rebuilt).state_dict().keys() == model.state_dict().keys()


# A 3-frame × 2-word similarity matrix and its three reductions, by hand.
SIM = torch.tensor([[0.1, 0.8], [0.5, 0.2], [0.9, 0.0]])
EXPECTED = {
    "mean": (0.1 + 0.8 + 0.5 + 0.2 + 0.9 + 0.0) / 6,  # 0.41666
    "max_time_mean_words": (0.9 + 0.8) / 2,  # 0.85
    "max_words_mean_time": (0.8 + 0.5 + 0.9) / 3,  # 0.73333
}


@pytest.mark.parametrize("reduction", list(EXPECTED))
def test_reductions_hand_computed(reduction):
    score = reduce_similarity(
        SIM, torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool), reduction
    )
    assert score.item() == pytest.approx(EXPECTED[reduction], abs=1e-6)


@pytest.mark.parametrize("reduction", list(EXPECTED))
def test_reductions_ignore_padding_of_both_sides(reduction):
    padded = torch.full((5, 4), 0.99)  # padding cells hold large values: they must not count
    padded[:3, :2] = SIM
    a_mask = torch.tensor([True, True, True, False, False])
    q_mask = torch.tensor([True, True, False, False])
    score = reduce_similarity(padded, a_mask, q_mask, reduction)
    assert score.item() == pytest.approx(EXPECTED[reduction], abs=1e-6)


def test_unknown_reduction_raises():
    with pytest.raises(ModelError, match="unknown reduction"):
        reduce_similarity(
            SIM, torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool), "median"
        )


@pytest.mark.parametrize("clamp", [True, False])
@pytest.mark.parametrize("reduction", list(EXPECTED))
def test_score_matrix_chunked_equals_plain_and_is_padding_invariant(reduction, clamp):
    model = tiny_aligner(reduction, clamp=clamp).eval()
    gen = torch.Generator().manual_seed(6)
    lengths = torch.tensor([33, 20, 9, 33, 14])
    feats = log_mel_like(gen, 5, 33, 16)
    tokens = [
        ["a", "dog", "barks"],
        ["cat", "meows"],
        ["engine"],
        ["a", "bird", "sings", "a", "dog"],
    ]
    with torch.no_grad():
        a, a_mask = model.encode_audio(feats, lengths)
        q, q_mask = model.encode_text(tokens)
        # garbage at padded positions must not matter either
        a[~a_mask] = torch.randn(int((~a_mask).sum()), a.shape[-1], generator=gen)
        q[~q_mask] = torch.randn(int((~q_mask).sum()), q.shape[-1], generator=gen)
        full = model.score_matrix(a, a_mask, q, q_mask)
        chunked = model.score_matrix(a, a_mask, q, q_mask, max_elements=1)
        plain = torch.tensor(
            [
                [
                    model.score_pairs(
                        a[i : i + 1], a_mask[i : i + 1], q[j : j + 1], q_mask[j : j + 1]
                    ).item()
                    for j in range(4)
                ]
                for i in range(5)
            ]
        )
        torch.testing.assert_close(full, plain)
        torch.testing.assert_close(chunked, plain)
        # each clip alone (no audio padding) against each caption alone (no word padding)
        for i, n in enumerate(lengths.tolist()):
            ai, ami = model.encode_audio(feats[i : i + 1, :n], lengths[i : i + 1])
            for j, caption in enumerate(tokens):
                qj, qmj = model.encode_text([caption])
                alone = model.score_pairs(ai, ami, qj, qmj)
                assert alone.item() == pytest.approx(full[i, j].item(), abs=1e-5)


def test_score_matrix_under_bf16_autocast_stays_close():
    model = tiny_aligner("mean").eval()
    gen = torch.Generator().manual_seed(8)
    a = torch.nn.functional.normalize(torch.randn(3, 50, 12, generator=gen), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(4, 6, 12, generator=gen), dim=-1)
    a_mask, q_mask = torch.ones(3, 50, dtype=torch.bool), torch.ones(4, 6, dtype=torch.bool)
    reference = model.score_matrix(a, a_mask, q, q_mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.score_matrix(a, a_mask, q, q_mask)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, atol=5e-3, rtol=0)


def test_phrase_activation():
    assert torch.allclose(Aligner.phrase_activation(SIM, slice(0, 2), "mean"), SIM.mean(1))
    assert torch.allclose(Aligner.phrase_activation(SIM, slice(1, 2), "max"), SIM[:, 1])
    with pytest.raises(ModelError, match="selects no word"):
        Aligner.phrase_activation(SIM, slice(2, 3))


def test_tiny_aligner_overfits_four_pairs():
    torch.manual_seed(0)
    model = tiny_aligner("max_time_mean_words")
    model.audio_encoder.dropout.p = 0.0
    gen = torch.Generator().manual_seed(7)
    feats = log_mel_like(gen, 4, 32, 16)
    lengths = torch.tensor([32, 28, 24, 20])
    tokens = [["a", "dog", "barks"], ["cat", "meows"], ["engine", "idles"], ["a", "bird", "sings"]]
    clip_ids = torch.arange(4)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = triplet_ranking_loss(
            model(feats, lengths, tokens), clip_ids, margin=1.0, generator=gen
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        scores = model(feats, lengths, tokens)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert scores.argmax(1).tolist() == [0, 1, 2, 3]
    assert scores.argmax(0).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("shape", [(2, 3, 9, 12), (2, 2, 8, 5), (1, 4, 6, 8)])
def test_lp_pool_backward_matches_autograd_of_the_plain_formula(shape: tuple[int, ...]) -> None:
    import torch.nn.functional as F

    from acalign.models.crnn import lp_pool

    def plain(x: torch.Tensor) -> torch.Tensor:
        return (F.avg_pool2d(x.pow(4), (2, 4)) * 8).clamp_min(1e-20).pow(0.25)

    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[0, :, :4] = 0.0  # all-zero windows (padding) must give finite, zero gradients
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(plain(x).shape, dtype=torch.float64)
    (lp_pool(ours, p=4.0, size=(2, 4)) * weights).sum().backward()
    (plain(theirs) * weights).sum().backward()
    torch.testing.assert_close(lp_pool(x, p=4.0, size=(2, 4)), plain(x))
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(
        lambda t: lp_pool(t, p=4.0, size=(2, 4)), (torch.randn(*shape, dtype=torch.float64, requires_grad=True),)
    )


@pytest.mark.parametrize("padded", [False, True])
def test_recomputing_the_first_block_gives_the_same_step_and_keeps_less(padded: bool) -> None:
    """``recompute_first_block`` (low_memory training): same outputs, gradients and BatchNorm
    statistics, and block 1's conv output is no longer kept for the backward."""
    torch.manual_seed(0)
    config = CRNNConfig(channels=(8, 16), pools=((2, 4), (2, 4)), gru_hidden=6)
    feats = torch.randn(3, 40, 64)
    lengths = torch.tensor([40, 31, 17]) if padded else None
    results = []
    for recompute in (False, True):
        torch.manual_seed(1)
        model = CRNN(config).train()
        model.recompute_first_block = recompute
        saved: list[int] = []

        def keep(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = model(feats, lengths)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        stats = [b.clone() for b in model.buffers()]
        results.append((out.detach(), grads, stats, sum(saved)))
    (out_a, grads_a, stats_a, kept_a), (out_b, grads_b, stats_b, kept_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
    for a, b in zip(grads_a + stats_a, grads_b + stats_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    # The outer hook stops seeing what the checkpoint keeps inside: this shows that block 1's
    # conv output is no longer saved by the graph, not by how much the peak drops.
    first_conv_output = 3 * 8 * 40 * 64 * 4  # (B, C1, T, F) float32
    assert kept_b <= kept_a - first_conv_output


@pytest.mark.parametrize("padded", [False, True])
def test_a_frame_map_before_the_interpolation_equals_mapping_its_output(padded: bool) -> None:
    """The aligner projects the CRNN's pooled frames before they are interpolated back: an
    affine map commutes with the interpolation, so this must equal projecting every frame."""
    torch.manual_seed(0)
    model = CRNN(CRNNConfig(channels=(8, 16), pools=((2, 4), (2, 4)), gru_hidden=6)).eval()
    project = torch.nn.Linear(12, 5)
    feats = torch.randn(3, 41, 64)
    lengths = torch.tensor([41, 30, 9]) if padded else torch.tensor([41, 41, 41])
    with torch.no_grad():
        early = model(feats, lengths, frame_map=project)
        late = project(model(feats, lengths))
    valid = valid_mask(lengths, 41)
    torch.testing.assert_close(early[valid], late[valid], rtol=1e-5, atol=1e-6)
    assert early.shape == (3, 41, 5) and bool((early[~valid] == 0).all())


@pytest.mark.parametrize("recompute", [False, True])
def test_a_frozen_first_batchnorm_still_trains_the_conv(recompute: bool) -> None:
    """Block 1's BatchNorm output needs no gradient when it is frozen; its conv still does."""
    torch.manual_seed(0)
    model = CRNN(CRNNConfig(channels=(8, 16), pools=((2, 4), (2, 4)), gru_hidden=6)).train()
    model.recompute_first_block = recompute
    model.blocks[0].norm.requires_grad_(False)
    model(torch.randn(2, 40, 64)).sum().backward()
    assert model.blocks[0].conv.weight.grad is not None
    assert bool(model.blocks[0].conv.weight.grad.abs().sum() > 0)


def test_fused_leaky_lp_pool_matches_the_plain_ops_and_refuses_a_second_backward() -> None:
    import torch.nn.functional as F

    from acalign.models.crnn import leaky_lp_pool

    def plain(x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(x, 0.1)
        return (F.avg_pool2d(y.pow(4), (2, 4)) * 8).clamp_min(1e-20).pow(0.25)

    x = torch.randn(2, 3, 9, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[0, :, :4] = 0.0
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(plain(x).shape, dtype=torch.float64)
    out = leaky_lp_pool(ours, slope=0.1, p=4.0, size=(2, 4))
    torch.testing.assert_close(out, plain(x))
    loss = (out * weights).sum()
    loss.backward(retain_graph=True)
    (plain(theirs) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-12, rtol=0)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()
    with torch.no_grad():  # inference path: LeakyReLU in place on a fresh tensor, same values
        torch.testing.assert_close(leaky_lp_pool(x.clone(), slope=0.1, p=4.0, size=(2, 4)), plain(x))
