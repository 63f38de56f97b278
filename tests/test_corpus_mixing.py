"""Clip synthesis: audible extents, masking by the background, looping, exact placement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acalign.data.corpus.mixing import (
    BackgroundPlan,
    ClipPlan,
    EventPlan,
    MixConfig,
    Piece,
    _loop,
    audible_extent,
    render_clip,
)

SR = 32000


def test_audible_extent_trims_silence_and_quiet_tails() -> None:
    rng = np.random.default_rng(0)
    audio = np.zeros(SR, dtype=np.float32)
    audio[3200:6400] = 0.5 * rng.standard_normal(3200)
    audio[6400:9600] = 0.5e-3 * rng.standard_normal(3200)  # -60 dB tail
    assert audible_extent(audio, sample_rate=SR, threshold_db=-35) == (3200, 6400)
    assert audible_extent(audio, sample_rate=SR, threshold_db=-80) == (3200, 9600)
    assert audible_extent(np.zeros(100), sample_rate=SR, threshold_db=-35) == (0, 0)
    assert audible_extent(audio, sample_rate=SR, threshold_db=-35, floor=10.0) == (0, 0)


def test_loop_fills_the_clip_from_a_short_bed() -> None:
    source = np.ones(1000, dtype=np.float32)
    out = _loop(source, 0, 5000, 100)
    assert out.shape == (5000,)
    assert np.allclose(out[100:900], 1.0) and np.allclose(out[1000:1800], 1.0)
    assert out.min() > 0.49  # crossfades never dip to silence


def _save(tmp_path: Path, name: str, audio: np.ndarray) -> str:
    path = tmp_path / f"{name}.npy"
    np.save(path, audio.astype(np.float16))
    return str(path)


def test_background_masks_the_quiet_tail_of_an_event(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    loud = rng.standard_normal(SR // 2) * 0.5
    tail = rng.standard_normal(SR // 2) * 0.5 * 10 ** (-25 / 20)  # within -35 dB, but 25 dB down
    event = np.concatenate([loud, tail])
    bed = rng.standard_normal(SR * 3) * 0.3
    prepared = {"event": _save(tmp_path, "event", event), "bed": _save(tmp_path, "bed", bed)}
    pieces = [Piece("event", 0, len(event), 0)]
    config = MixConfig()

    def render(background: BackgroundPlan) -> float:
        plan = ClipPlan("c.wav", "train", 7, background, [EventPlan("x", pieces, 0.0, 10.0)])
        audio, placed = render_clip(plan, prepared, config)
        assert audio.shape == (config.clip_samples,) and np.abs(audio).max() <= 0.95 + 1e-6
        (only,) = placed
        assert only.onset == 0.0
        return only.offset

    assert render(BackgroundPlan(None, None)) == 1.0  # quiet bed: the whole tail is heard
    assert render(BackgroundPlan("bed", "bed")) == 0.5  # real bed: the tail is masked
