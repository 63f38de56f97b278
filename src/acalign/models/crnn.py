"""The paper's CRNN audio encoder: one embedding per input frame.

Layout (732,354 parameters in the paper config, as the reference):

* 5 blocks, each ``BatchNorm(in channels) → 3×3 conv (no bias) → LeakyReLU(0.1)``; the first
  block's BatchNorm over the single input channel is the "input BatchNorm";
* LP pooling (p = 4) after blocks 1, 3 and 5 with (time, freq) sizes (2, 4), (2, 4), (1, 4):
  time / 4, 64 mel bins → 1;
* dropout 0.3, one-layer BiGRU (150 per direction → 300), linear interpolation back to the
  input frame count.

Padding never changes a clip's result (the reference let BatchNorm and the GRU see zero
padding): BatchNorm statistics in training use valid frames only, padded positions are zeroed
before every convolution (exactly the zero padding a lone clip's conv sees at its end), the GRU
runs on packed sequences, and each clip is interpolated with its own length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.checkpoint import checkpoint

from acalign.errors import ModelError
from acalign.tensors import to_device

FrameMap = Callable[[torch.Tensor], torch.Tensor]

# Keeps LP pooling's p-th root differentiable where a window is all zeros (padding); its
# effect on real windows is below 1e-5 in the output.
_LP_EPS = 1e-20


@dataclass
class CRNNConfig:
    """Shape of the CRNN audio encoder (defaults: the paper's).

    Attributes:
        n_mels: input feature bins ``F``.
        channels: output channels of the conv blocks.
        pools: per block, the (time, freq) LP-pooling size; ``(1, 1)`` = no pooling.
        lp_pool_p: the norm of LP pooling.
        dropout: before the GRU.
        gru_hidden: GRU units per direction; the output size is ``2 * gru_hidden``.
        leaky_slope: LeakyReLU negative slope.
    """

    n_mels: int = 64
    channels: tuple[int, ...] = (32, 128, 128, 128, 128)
    pools: tuple[tuple[int, int], ...] = ((2, 4), (1, 1), (2, 4), (1, 1), (1, 4))
    lp_pool_p: float = 4.0
    dropout: float = 0.3
    gru_hidden: int = 150
    leaky_slope: float = 0.1
    kernel_size: int = 3

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.pools = tuple((int(t), int(f)) for t, f in self.pools)
        if len(self.pools) != len(self.channels):
            raise ModelError(
                f"CRNNConfig: pools has {len(self.pools)} entries but channels has {len(self.channels)}"
            )
        if self.n_mels < 1 or any(c < 1 for c in self.channels) or self.gru_hidden < 1:
            raise ModelError("CRNNConfig: n_mels, channels and gru_hidden must be positive")
        if any(t < 1 or f < 1 for t, f in self.pools):
            raise ModelError(f"CRNNConfig: pool sizes must be ≥ 1, got {self.pools}")
        if self.kernel_size % 2 != 1:
            raise ModelError(f"CRNNConfig: kernel_size must be odd, got {self.kernel_size}")
        if self.freq_out < 1:
            raise ModelError(
                f"CRNNConfig: frequency pooling {[f for _, f in self.pools]} leaves no bin of "
                f"n_mels={self.n_mels}"
            )

    @property
    def out_dim(self) -> int:
        """Size of each output frame embedding (``2 * gru_hidden``; 300 in the paper)."""
        return 2 * self.gru_hidden

    @property
    def time_reduction(self) -> int:
        """Product of the time pooling sizes (4 in the paper)."""
        return math.prod(t for t, _ in self.pools)

    @property
    def freq_out(self) -> int:
        """Frequency bins left after pooling (1 in the paper)."""
        bins = self.n_mels
        for _, f in self.pools:
            bins //= f
        return bins


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over ``(B, C, T, F)`` that ignores padded frames and outputs zeros there.

    Training statistics come from valid frames only. Same parameters and buffers as
    ``nn.BatchNorm2d`` (checkpoints stay standard); with no padding it *is* ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Normalise ``x (B, C, T, F)``; ``valid (B, T)`` bool marks real frames (None = all).

        Returns ``(B, C, T, F)`` in ``x``'s dtype, exactly 0 at padded frames.
        """
        if valid is None:
            return super().forward(x)
        frames = valid[:, None, :, None].to(torch.float32)  # (B, 1, T, 1)
        source = x.float()
        if self.training:
            source = source * frames
            mean, var = self._masked_moments(source, frames)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias
        per_channel = (1, -1, 1, 1)
        # Folding the frame mask into the (B, C, T, 1) scale and shift zeroes padded frames in
        # the same pass as the normalisation.
        out = torch.addcmul(
            shift.view(per_channel) * frames, source, scale.view(per_channel) * frames
        )
        return out.to(x.dtype)

    def _masked_moments(
        self, masked: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (biased) variance over valid frames; updates the running stats."""
        n = frames.sum() * masked.shape[-1]
        mean = masked.sum(dim=(0, 2, 3)) / n
        # E[x²] - E[x]² in one pass over the big tensor; float32 is ample for log-mel ranges.
        var = ((masked * masked).sum(dim=(0, 2, 3)) / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = (
                self.momentum
                if self.momentum is not None
                else 1.0 / float(self.num_batches_tracked)
            )
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(unbiased.detach(), momentum)
        return mean, var


class ConvBlock(nn.Module):
    """``BatchNorm → conv (no bias) → LeakyReLU``; padded frames enter the conv as zeros."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int, slope: float
    ) -> None:
        """A block mapping ``(B, in, T, F)`` to ``(B, out, T, F)``."""
        super().__init__()
        self.norm = MaskedBatchNorm2d(in_channels)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.act = nn.LeakyReLU(slope, inplace=True)  # the conv output is not needed for backward: saves a copy

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        *,
        pool: tuple[int, int] = (1, 1),
        p: float = 4.0,
        recompute: bool = False,
    ) -> torch.Tensor:
        """``x (B, C, T, F)``, ``valid (B, T)`` bool (None: no padding) → ``(B, out, T, F)``,
        LP-pooled by ``pool`` (time, freq) with norm ``p`` when ``pool`` is not ``(1, 1)``.

        Zeros at padded frames are exactly the zero padding a lone clip's conv sees at its end.
        ``recompute`` (training, pooled blocks): keep only the conv's input for the backward and
        run the conv again there, instead of keeping its full-size output until then.
        """
        normed = self.norm(x, valid)
        if pool == (1, 1):
            return self.act(self.conv(normed))
        if torch.is_grad_enabled() and (normed.requires_grad or self.conv.weight.requires_grad):
            if recompute:
                # The BatchNorm stays outside: run twice, it would update its statistics twice.
                # Nothing inside draws random numbers, so no RNG state needs saving.
                return checkpoint(
                    self._conv_lp_pool, normed, pool, p, use_reentrant=False, preserve_rng_state=False
                )
            return self._conv_lp_pool(normed, pool, p)
        # No gradient needed: LeakyReLU and the powers of the LP pool in place on our own conv
        # output.
        return _lp_pool_forward(self.act(self.conv(normed)), float(p), pool, inplace=True)

    def _conv_lp_pool(self, normed: torch.Tensor, pool: tuple[int, int], p: float) -> torch.Tensor:
        """Training: conv, then LeakyReLU and LP pooling in one step (:func:`leaky_lp_pool`)."""
        return leaky_lp_pool(self.conv(normed), slope=self.act.negative_slope, p=p, size=pool)


def lp_pool(x: torch.Tensor, *, p: float, size: tuple[int, int]) -> torch.Tensor:
    """LP pooling ``(sum over window of x^p)^(1/p)`` of ``x (B, C, T, F)``, window = stride = size.

    Our own rather than ``nn.LPPool2d``: torch's p-th root has an infinite gradient on all-zero
    windows (padding), which turns into NaN; a tiny floor keeps it finite. Frames or bins that
    do not fill a last window are dropped, as ``avg_pool2d`` does.
    """
    if size == (1, 1):
        return x
    if torch.is_grad_enabled() and x.requires_grad:
        return _LPPool.apply(x, float(p), (int(size[0]), int(size[1])))
    return _lp_pool_forward(x, p, size)


def _lp_pool_forward(x: torch.Tensor, p: float, size: tuple[int, int], *, inplace: bool = False) -> torch.Tensor:
    """LP pooling without autograd; ``inplace`` overwrites ``x`` with ``x ** p`` (no copy)."""
    pooled = F.avg_pool2d(_power(x, p, inplace=inplace), size).mul_(size[0] * size[1])
    return _root_(pooled.clamp_min_(_LP_EPS), p)


def _power(x: torch.Tensor, p: float, *, inplace: bool = False) -> torch.Tensor:
    """``x ** p``; p = 4 as two squarings, the second in place (``pow(4)`` is about twice as
    slow on CPU, in float32 and bfloat16 alike); ``inplace`` squares ``x`` itself."""
    if p == 4.0:
        out = x.square_() if inplace else x.square()
        return out.square_()
    return x.pow_(p) if inplace else x.pow(p)


def _root_(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x ** (1 / p)`` in place; p = 4 as two square roots (``pow(0.25)`` took 11.7 against
    2.3 ms on a (32, 32, 250, 16) float32 tensor; the two differ by at most one rounding)."""
    if p == 4.0:
        return x.sqrt_().sqrt_()
    return x.pow_(1.0 / p)


class _LPPool(torch.autograd.Function):
    """LP pooling with a hand-written backward that keeps only the input and the (small) output.

    Autograd's chain ``pow → avg_pool2d → pow`` saves ``x^p`` (a second copy of the largest
    activation) and spends about a fifth of a CPU training step in ``pow`` and its backward.
    With ``y = (sum_w x^p)^(1/p)`` per window, ``dy/dx_i = (x_i / y)^(p-1)``, computed as
    ``x^(p-1) * (g / y^(p-1))``: one full-size power and one in-place broadcast multiply.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        y = _lp_pool_forward(x, p, size)
        ctx.save_for_backward(x, y)
        ctx.p, ctx.size = p, size
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        x, y = ctx.saved_tensors
        return _scale_by_window(x.pow(ctx.p - 1.0), y, grad_y, p=ctx.p, size=ctx.size), None, None


def _scale_by_window(
    grad: torch.Tensor, out: torch.Tensor, grad_out: torch.Tensor, *, p: float, size: tuple[int, int]
) -> torch.Tensor:
    """Finish an LP-pool gradient in place: ``grad`` holds ``x^(p-1)`` (full size); multiply each
    window by ``grad_out / out^(p-1)`` and zero what no window covers. Returns ``grad``."""
    kt, kf = size
    batch, channels, t_out, f_out = out.shape
    # Windows floored at _LP_EPS (all-zero padding) pass no gradient, as with clamp_min.
    live = _power(out, p) > _LP_EPS
    scale = torch.where(live, grad_out / out.pow(p - 1.0), torch.zeros_like(out))
    covered = grad[:, :, : t_out * kt, : f_out * kf]
    covered.view(batch, channels, t_out, kt, f_out, kf).mul_(
        scale.view(batch, channels, t_out, 1, f_out, 1)
    )
    if t_out * kt < grad.shape[2]:
        grad[:, :, t_out * kt :].zero_()
    if f_out * kf < grad.shape[3]:
        grad[:, :, :, f_out * kf :].zero_()
    return grad


def leaky_lp_pool(
    x: torch.Tensor, *, slope: float, p: float, size: tuple[int, int]
) -> torch.Tensor:
    """``lp_pool(leaky_relu(x, slope), p=p, size=size)``; in training (even ``p``), one fused
    step that keeps a single full-size activation and needs no gradient buffer of its own."""
    if torch.is_grad_enabled() and x.requires_grad and p % 2 == 0:
        return _LeakyLPPool.apply(x, float(slope), float(p), (int(size[0]), int(size[1])))
    return lp_pool(F.leaky_relu(x, slope), p=p, size=size)


class _LeakyLPPool(torch.autograd.Function):
    """LeakyReLU then LP pooling (even ``p``), with a backward that works in place.

    With ``y = leaky(x)`` and ``o`` the pooled output, ``dL/dx = g / o^(p-1) · y^(p-1) ·
    leaky'(x)``; for even ``p``, ``y^(p-1)`` has the sign of ``x``, so ``leaky'(x)`` is applied by
    running LeakyReLU over ``y^(p-1)``. Everything happens in the saved ``y``'s buffer: the
    largest activation turns into its own gradient, which removes two full-size temporaries
    (the pooling gradient and LeakyReLU's) from the backward pass and LeakyReLU's backward
    kernel from the step. The price: the saved ``y`` is consumed, so a second backward
    through the same graph (``retain_graph=True``) is refused.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float, p: float, size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        y = F.leaky_relu(x, slope)
        out = _lp_pool_forward(y, p, size)
        ctx.save_for_backward(y, out)
        ctx.slope, ctx.p, ctx.size, ctx.consumed = slope, p, size, False
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        if ctx.consumed:
            raise RuntimeError(
                "acalign CRNN: a second backward through the same graph is not supported "
                "(its LeakyReLU/LP-pool step reuses its activation as the gradient buffer)"
            )
        ctx.consumed = True
        y, out = ctx.saved_tensors
        grad = F.leaky_relu_(y.pow_(ctx.p - 1.0), ctx.slope)
        return _scale_by_window(grad, out, grad_out, p=ctx.p, size=ctx.size), None, None, None


def pooled_lengths(lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Valid frames after pooling time by ``factor`` (floor, at least 1)."""
    return torch.div(lengths, factor, rounding_mode="floor").clamp_min(1)


def valid_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """``(B, total)`` bool mask, True where ``t < lengths[b]``."""
    return torch.arange(total, device=lengths.device)[None, :] < lengths[:, None]


def interpolate_per_clip(
    x: torch.Tensor, src_lengths: torch.Tensor, dst_lengths: torch.Tensor, total: int
) -> torch.Tensor:
    """Linearly resample each clip's ``src_lengths[b]`` frames of ``x (B, S, D)`` to
    ``dst_lengths[b]`` frames → ``(B, total, D)``, zeros past each clip's length.

    Matches ``F.interpolate(mode="linear", align_corners=False)`` for one clip; torch has no
    per-sample output size, and interpolating the padded batch would use the wrong scale.
    """
    t = torch.arange(total, device=x.device, dtype=torch.float32)[None, :]
    scale = src_lengths.to(torch.float32)[:, None] / dst_lengths.to(torch.float32)[:, None]
    src = ((t + 0.5) * scale - 0.5).clamp_min(0.0)
    last = (src_lengths - 1)[:, None].to(torch.float32)
    src = torch.minimum(src, last)
    lo = src.floor()
    frac = (src - lo).unsqueeze(-1).to(x.dtype)
    lo = lo.long()
    hi = torch.minimum(lo + 1, last.long())
    index_lo = lo.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    index_hi = hi.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    out = torch.gather(x, 1, index_lo) * (1 - frac) + torch.gather(x, 1, index_hi) * frac
    return out * valid_mask(dst_lengths, total).unsqueeze(-1).to(out.dtype)


class CRNN(nn.Module):
    """The CRNN audio encoder: log-mel frames → one ``out_dim``-d vector per frame."""

    def __init__(self, config: CRNNConfig | None = None) -> None:
        """Build the encoder described by ``config`` (the paper's by default)."""
        super().__init__()
        self.config = config or CRNNConfig()
        cfg = self.config
        in_channels = [1, *cfg.channels[:-1]]
        self.blocks = nn.ModuleList(
            ConvBlock(cin, cout, kernel_size=cfg.kernel_size, slope=cfg.leaky_slope)
            for cin, cout in zip(in_channels, cfg.channels, strict=True)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(
            cfg.channels[-1] * cfg.freq_out, cfg.gru_hidden, batch_first=True, bidirectional=True
        )
        # Training's memory/speed trade (``low_memory``): block 1's conv output, the largest
        # activation (131 MB at batch 32 in float32), is computed again in its backward instead
        # of kept; the conv is cheap there (one input channel). Same results; not saved with the
        # model. Doing the same for block 3 lowered the peak by only 23 MB more, at a fifth of
        # the speed: the peak falls inside block 3's own backward, where it is needed anyway.
        self.recompute_first_block = False

    @property
    def out_dim(self) -> int:
        """Output size per frame (``2 * gru_hidden``)."""
        return self.config.out_dim

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        frame_map: FrameMap | None = None,
    ) -> torch.Tensor:
        """Encode a padded batch.

        Args:
            feats: ``(B, T, F)`` log-mel features, ``F = n_mels``; values past a clip's length
                are ignored whatever they are.
            lengths: ``(B,)`` valid frames per clip (None = all ``T``).
            frame_map: an affine map of each frame (e.g. the aligner's projection), applied to
                the BiGRU's pooled-rate frames before they are interpolated back to ``T``:
                interpolation weights sum to one, so this equals mapping the interpolated
                frames, on ``time_reduction`` times fewer rows.

        Returns:
            ``(B, T, out_dim)`` frame embeddings (not normalised; ``frame_map``'s size when
            given), zeros past each length. Float32, also under autocast.
        """
        batch, total = self._check_features(feats)
        # Lengths are checked and the padding decision made on the host, so that a GPU batch
        # costs no device-to-host sync here (pass CPU lengths to benefit).
        host_lengths = (
            torch.full((batch,), total, dtype=torch.long)
            if lengths is None
            else lengths.detach().to("cpu", torch.long)
        )
        self._check_lengths(host_lengths, batch, total)
        x = feats.unsqueeze(1)
        if total < self.config.time_reduction:  # too short to pool: pad (masked) up to one step
            x = F.pad(x, (0, 0, 0, self.config.time_reduction - total))
        x = self._in_weight_layout(x)
        # Without padding (e.g. a batch of equal 10 s clips) masks, packing and per-clip
        # interpolation are skipped: the plain path computes exactly the same, faster.
        padded = bool((host_lengths < x.shape[2]).any())
        if not padded:
            return self.recurrent(self._conv_stack(x), total, frame_map=frame_map)
        cur = host_lengths
        for block, pool in zip(self.blocks, self.config.pools, strict=True):
            valid = valid_mask(to_device(cur, feats.device), x.shape[2])
            x = block(x, valid, pool=pool, p=self.config.lp_pool_p, recompute=self._recomputes(block))
            cur = pooled_lengths(cur, pool[0])
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
        x = _mapped(self._run_gru(self.dropout(x).float(), cur), frame_map)
        return interpolate_per_clip(
            x, to_device(cur, feats.device), to_device(host_lengths, feats.device), total
        )

    @property
    def context_frames(self) -> int:
        """Input frames of context each output of :meth:`conv_frames` reads on either side of
        its own ``time_reduction`` frames, rounded up to a multiple of ``time_reduction``.

        Each block's conv reaches ``kernel_size // 2`` of its own frames, which are as many
        input frames as the time pooling before it merged (paper: 1 + 2 + 2 + 4 + 4 = 13 → 16).
        Cut a long input into pieces that start on multiples of ``time_reduction`` and overlap
        by this much, and :meth:`conv_frames` of the pieces, minus their overlap, equals
        :meth:`conv_frames` of the whole (tested).
        """
        reach, rate = 0, 1
        for _, (time_pool, _) in zip(self.blocks, self.config.pools, strict=True):
            reach += (self.config.kernel_size // 2) * rate
            rate *= time_pool
        step = self.config.time_reduction
        return -(-reach // step) * step

    def conv_frames(self, feats: torch.Tensor) -> torch.Tensor:
        """The convolutional part alone: ``feats (B, T, F)``, no padding, ``T ≥ time_reduction``
        → ``(B, T // time_reduction, C · F')``, what :meth:`recurrent` takes.

        Output frame ``j`` depends on input frames ``j · time_reduction`` to
        ``(j + 1) · time_reduction - 1`` and :attr:`context_frames` on either side only, so
        overlapping windows of a long recording can share it (:mod:`acalign.infer.grounding`).
        """
        _, total = self._check_features(feats)
        if total < self.config.time_reduction:
            raise ModelError(
                f"CRNN.conv_frames needs at least {self.config.time_reduction} frames, got {total}"
            )
        return self._conv_stack(self._in_weight_layout(feats.unsqueeze(1)))

    def _recomputes(self, block: ConvBlock) -> bool:
        """Whether ``block`` recomputes its conv output in the backward (``recompute_first_block``)."""
        return self.recompute_first_block and block is self.blocks[0]

    def _in_weight_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, 1, T, F)`` channels-last when the weights are (set by ``.to(memory_format=...)``)."""
        if self.blocks[0].conv.weight.is_contiguous(memory_format=torch.channels_last):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def recurrent(
        self, x: torch.Tensor, total: int, *, frame_map: FrameMap | None = None
    ) -> torch.Tensor:
        """The recurrent part: ``x (B, T', C · F')`` from :meth:`conv_frames` → ``(B, total,
        out_dim)`` float32, the BiGRU's output (mapped by ``frame_map``, see :meth:`forward`)
        interpolated linearly to ``total`` frames."""
        x = _mapped(self._run_gru(self.dropout(x).float(), None), frame_map)
        return F.interpolate(x.transpose(1, 2), size=total, mode="linear").transpose(1, 2)

    def _conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks without padding: ``(B, 1, T, F)`` → ``(B, T', C · F')``."""
        for block, pool in zip(self.blocks, self.config.pools, strict=True):
            x = block(x, None, pool=pool, p=self.config.lp_pool_p, recompute=self._recomputes(block))
        return x.permute(0, 2, 1, 3).flatten(2)

    def _check_features(self, feats: torch.Tensor) -> tuple[int, int]:
        """``(B, T)`` of ``feats``; ModelError unless it is ``(B, T, n_mels)``."""
        if feats.dim() != 3:
            raise ModelError(f"CRNN expects features of shape (B, T, F), got {tuple(feats.shape)}")
        batch, total, bins = feats.shape
        if bins != self.config.n_mels:
            raise ModelError(
                f"CRNN expects {self.config.n_mels} mel bins, got features with {bins}"
            )
        return batch, total

    @staticmethod
    def _check_lengths(lengths: torch.Tensor, batch: int, total: int) -> None:
        """ModelError unless ``lengths`` (host) has shape ``(batch,)`` and values in 1..total."""
        if lengths.shape != (batch,):
            raise ModelError(f"CRNN lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > total).any()):
            raise ModelError(f"CRNN lengths must be in 1..{total}, got {lengths.tolist()}")

    def _run_gru(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """BiGRU over the valid frames only → ``(B, T', 2 * hidden)`` float32, zeros past lengths.

        Runs in float32 also under autocast (it is ~3 % of the FLOPs). ``lengths`` (CPU) = None:
        no padding.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            if lengths is None:
                return self.gru(x)[0]
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


def _mapped(frames: torch.Tensor, frame_map: FrameMap | None) -> torch.Tensor:
    """``frame_map(frames)`` in float32 (a linear map under autocast gives bfloat16)."""
    return frames if frame_map is None else frame_map(frames).float()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "CRNN",
    "CRNNConfig",
    "MaskedBatchNorm2d",
    "count_parameters",
    "interpolate_per_clip",
    "leaky_lp_pool",
    "lp_pool",
]
