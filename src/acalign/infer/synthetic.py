"""A hand-set model and generated audio whose right answers are known (tests, benchmarks).

:func:`band_detector_aligner` builds a real :class:`~acalign.models.aligner.Aligner` (a one-block
CRNN and a learned word table) whose weights are set by hand, not trained: its audio encoder
responds to energy in a frequency band per sound word, and its text encoder maps that word to
the matching direction. Grounding "dog" then finds exactly where band-limited noise in the
"dog" band was placed, so tests can check the whole inference path (decoding, windowing,
stitching, thresholds, the index) against known event times, deterministically and in
milliseconds. It goes through the ordinary export format, like any trained model.

Why hand-set instead of trained: a trained model's answers are approximate and training takes
far longer than a test may; the hand-set one's are known exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: Sound words and the frequency band (Hz) each one's detector responds to. The bands cover
#: whole groups of four mel bins of the default features (groups 2–4 and 13–14).
BANDS: dict[str, tuple[float, float]] = {"dog": (430.0, 950.0), "bird": (4520.0, 6300.0)}
#: Words that map to each sound's direction.
WORDS: dict[str, str] = {
    "dog": "dog",
    "dogs": "dog",
    "barks": "dog",
    "barking": "dog",
    "bird": "bird",
    "birds": "bird",
    "chirps": "bird",
    "sings": "bird",
}
_SHIFT = 20.0  # added to log-mel so that silence (about -18.4) stays positive through LP pooling
_GAIN = 0.5  # detector slope per log-mel unit
_ON_LEVEL = 27.0  # pooled level (log-mel + shift) above which a band counts as active
_BACKGROUND = 0.15  # constant component: frames with no event point away from every word


def band_detector_aligner(feature_config: Any | None = None) -> Any:
    """An :class:`Aligner` whose frame embedding is ``(dog, bird, background)`` activity.

    Frame ``t``'s embedding is about ``(1, 0, 0.15)`` (normalised) inside a "dog"-band event,
    ``(0, 1, 0.15)`` inside a "bird"-band one and ``(0, 0, 1)`` elsewhere; the words of
    :data:`WORDS` embed to the unit vector of their sound, any other word to zero. So the
    frame–word similarity of "dog" is about 0.99 inside dog events and 0 outside.
    """
    import torch

    from acalign.data.captions import Vocabulary
    from acalign.data.features import FeatureConfig
    from acalign.models.aligner import Aligner, AlignerConfig
    from acalign.models.crnn import CRNNConfig
    from acalign.text.learned import LearnedEmbeddingEncoder

    features = feature_config or FeatureConfig()
    crnn = CRNNConfig(
        n_mels=features.n_mels,
        channels=(1,),
        pools=((1, 4),),
        dropout=0.0,
        gru_hidden=4,
    )
    sounds = list(BANDS)
    vocabulary = Vocabulary(list(WORDS))
    text = LearnedEmbeddingEncoder(vocabulary, dim=len(sounds) + 1)
    aligner = Aligner(AlignerConfig(audio=crnn, text=text.spec()), text_encoder=text)
    groups = _band_groups(features)
    with torch.no_grad():
        for param in aligner.parameters():
            param.zero_()
        block = aligner.audio_encoder.blocks[0]
        block.norm.weight.fill_(1.0)
        block.norm.bias.fill_(_SHIFT)
        block.conv.weight[0, 0, 1, 1] = 1.0  # identity kernel
        gru = aligner.audio_encoder.gru
        hidden = crnn.gru_hidden
        for direction in ("", "_reverse"):
            bias_ih = getattr(gru, f"bias_ih_l0{direction}")
            bias_ih[hidden : 2 * hidden] = -30.0  # update gate shut: h_t = candidate n_t
        # forward direction: unit k = tanh(gain * (mean pooled level of sound k's groups - on))
        weight_in = gru.weight_ih_l0[2 * hidden : 3 * hidden]
        bias_in = gru.bias_ih_l0[2 * hidden : 3 * hidden]
        for k, sound in enumerate(sounds):
            weight_in[k, groups[sound]] = _GAIN / len(groups[sound])
            bias_in[k] = -_GAIN * _ON_LEVEL
        # audio_proj maps unit k from [-1, 1] to [0, 1]; the last output is the background
        proj = aligner.audio_proj
        for k in range(len(sounds)):
            proj.weight[k, k] = 0.5
            proj.bias[k] = 0.5
        proj.bias[len(sounds)] = _BACKGROUND
        table = text.embedding.weight
        for word, sound in WORDS.items():
            table[vocabulary.index(word), sounds.index(sound)] = 1.0
    return aligner.eval()


def _band_groups(features: Any) -> dict[str, list[int]]:
    """GRU input columns (groups of four mel bins) whose centre frequencies lie in each band."""
    from acalign.data.features import hz_to_mel, mel_to_hz

    edges = mel_to_hz(
        np.linspace(hz_to_mel(features.fmin), hz_to_mel(features.fmax), features.n_mels + 2)
    )
    centres = edges[1:-1].reshape(-1, 4).mean(axis=1)
    return {
        sound: [int(g) for g in np.flatnonzero((centres >= lo) & (centres <= hi))]
        for sound, (lo, hi) in BANDS.items()
    }


def save_band_detector(out_dir: str | os.PathLike, *, threshold: float = 0.5) -> Path:
    """Export :func:`band_detector_aligner` as a model directory; return its path."""
    from acalign.data.features import FeatureConfig
    from acalign.models.export import InferenceConfig, save_exported

    features = FeatureConfig()
    return save_exported(
        band_detector_aligner(features),
        out_dir,
        feature_config=features,
        inference=InferenceConfig(threshold=threshold, median_filter=1),
        extra={"synthetic": "band detector (acalign.infer.synthetic)"},
    )


def band_noise(
    n_samples: int, *, sample_rate: int, band: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """White noise restricted to ``band`` (Hz) by zeroing FFT bins; unit peak, shape ``(n,)``."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sample_rate)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0.0
    noise = np.fft.irfft(spectrum, n_samples)
    return (noise / max(np.abs(noise).max(), 1e-12)).astype(np.float32)


def scene(
    duration: float,
    events: list[tuple[str, float, float]],
    *,
    sample_rate: int = 32000,
    rng: np.random.Generator,
    level: float = 0.3,
    floor: float = 0.002,
) -> np.ndarray:
    """A waveform ``(n,)``: faint white noise plus band noise for each ``(sound, onset, offset)``
    (events are cut at the scene's end)."""
    n = int(round(duration * sample_rate))
    wave = floor * rng.standard_normal(n).astype(np.float32)
    for sound, onset, offset in events:
        start = min(n, int(round(onset * sample_rate)))
        stop = min(n, int(round(offset * sample_rate)))
        if stop <= start:
            continue  # the event lies past the end of the scene
        wave[start:stop] += level * band_noise(
            stop - start, sample_rate=sample_rate, band=BANDS[sound], rng=rng
        )
    return wave


def save_random_model(
    out_dir: str | os.PathLike, *, crnn: Any | None = None, dim: int = 300, seed: int = 0
) -> Path:
    """Export an untrained aligner (the paper's CRNN by default, random weights) with a small
    learned word table over :data:`WORDS`: the right size and speed, meaningless answers.

    BatchNorm statistics are set to the scale of log-mel features so activations stay in range.
    """
    import torch

    from acalign.data.captions import Vocabulary
    from acalign.data.features import FeatureConfig
    from acalign.models.aligner import Aligner, AlignerConfig
    from acalign.models.crnn import CRNNConfig
    from acalign.models.export import save_exported
    from acalign.text.learned import LearnedEmbeddingEncoder

    torch.manual_seed(seed)
    features = FeatureConfig()
    text = LearnedEmbeddingEncoder(Vocabulary(list(WORDS)), dim=dim)
    config = AlignerConfig(audio=crnn or CRNNConfig(n_mels=features.n_mels), text=text.spec())
    aligner = Aligner(config, text_encoder=text)
    with torch.no_grad():
        first = aligner.audio_encoder.blocks[0].norm
        first.running_mean.fill_(-12.0)
        first.running_var.fill_(25.0)
    return save_exported(aligner.eval(), out_dir, feature_config=features)
