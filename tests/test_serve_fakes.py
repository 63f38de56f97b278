"""Small stand-ins for the serve tests: generated clips, a tiny corpus, a fake and a real model.

Not a test module (it holds no tests); ``test_serve_api.py`` and ``test_serve_browser.py``
import it.

* :class:`FakeModel` / :class:`FakeIndex` follow the interface of :mod:`acalign.infer` that
  :mod:`acalign.serve.backend` relies on; the activation follows the clip's loudness, so API
  tests can predict every number without depending on the model code.
* :func:`real_model_and_index` gives the real thing at test size: the hand-set band-detector
  model of :mod:`acalign.infer.synthetic`, exported and loaded like a trained one, and an index
  built by :func:`acalign.infer.index.build_index`.

Clips are band-noise scenes (:func:`acalign.infer.synthetic.scene`) so both models find the
same events: "dog" sounds in the 430–950 Hz band, "bird" sounds in the 4.5–6.3 kHz band.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

RATE = 32000
DOG = "corpus/audio/test/dog_bark.wav"  # index id of the corpus's dog clip (index over the root)


def scene_clip(path: Path, events: list[tuple[str, float, float]], *, seconds: float = 3.0) -> Path:
    """Write a 16-bit WAV at 32 kHz: faint noise plus band noise per ``(sound, onset, offset)``."""
    from acalign.infer.synthetic import scene

    wave = scene(seconds, events, sample_rate=RATE, rng=np.random.default_rng(7))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, RATE, subtype="PCM_16")
    return path


@dataclass
class FakeGrounding:
    phrase: str
    times: np.ndarray
    activation: np.ndarray
    segments: list[tuple[float, float, float]]


class FakeModel:
    """Activation = the clip's loudness over its floor (0..1); segments = runs above the threshold."""

    threshold = 0.5
    frame_rate = 50.0

    def ground(self, audio, phrases, *, sample_rate=None, threshold=None, median_filter=None):  # noqa: ANN001, ANN201
        thr = self.threshold if threshold is None else threshold
        if not isinstance(audio, np.ndarray):
            audio, sample_rate = sf.read(str(audio), dtype="float32")
        hop = int(sample_rate / self.frame_rate)
        n_frames = 1 + len(audio) // hop
        padded = np.pad(audio, (0, n_frames * hop - len(audio)))
        rms = np.sqrt((padded.reshape(n_frames, hop) ** 2).mean(axis=1)) + 1e-9
        # decades above the quiet floor, halved: about 0.8 inside a scene's events, 0 outside
        envelope = np.clip(np.log10(rms / np.percentile(rms, 10)) / 2.0, 0.0, 1.0)
        times = np.arange(n_frames) / self.frame_rate
        results = []
        for i, phrase in enumerate(phrases):
            activation = envelope ** (1.0 + 0.5 * i)
            results.append(FakeGrounding(phrase, times, activation, _runs(activation, thr, times)))
        return results


def _runs(activation: np.ndarray, threshold: float, times: np.ndarray) -> list[tuple[float, float, float]]:
    above = np.concatenate([[False], activation > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(int)))
    step = times[1] - times[0] if len(times) > 1 else 0.02
    return [
        (float(times[a]), float(times[b - 1] + step), float(activation[a:b].max()))
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


@dataclass
class FakeFile:
    file_id: str
    path: Path
    duration: float | None


@dataclass
class FakeHit:
    file_id: str
    score: float
    onset: float
    offset: float


class FakeIndex:
    """Every file, ranked by how many query words its name contains; span always 1–2 s.

    Like the real index, a file's id is its path relative to the indexed folder ``root``.
    """

    def __init__(self, root: Path, paths: list[Path]) -> None:
        self._files = [FakeFile(p.relative_to(root).as_posix(), p, sf.info(str(p)).duration) for p in paths]

    def files(self) -> list[FakeFile]:
        return list(self._files)

    def search(self, query: str, *, k: int = 10) -> list[FakeHit]:
        words = query.lower().split()
        scored = [(sum(w in f.path.name for w in words) + 1.0 / (1 + i), f) for i, f in enumerate(self._files)]
        scored.sort(key=lambda pair: -pair[0])
        return [FakeHit(f.file_id, float(s), 1.0, 2.0) for s, f in scored[:k]]


def make_library(root: Path) -> list[Path]:
    """Under ``root``: a corpus (``root/corpus``, split ``test``, v2) and one extra clip.

    Returns the audio paths: dog_bark, bird_song, park (corpus) and library/street_noise.
    """
    data = root / "corpus"
    audio = data / "audio" / "test"
    paths = [
        scene_clip(audio / "dog_bark.wav", [("dog", 1.0, 2.0)]),
        scene_clip(audio / "bird_song.wav", [("bird", 0.5, 1.2)]),
        scene_clip(audio / "park.wav", [("dog", 0.6, 1.6), ("bird", 2.4, 4.2)], seconds=5.0),
        scene_clip(root / "library" / "street_noise.wav", [("dog", 0.2, 0.6)], seconds=2.0),
    ]
    items = [
        _item("c1", "dog_bark.wav", "a dog barks twice", [("a dog barks", 0, 2, [[1.0, 2.0]])]),
        _item("c2", "bird_song.wav", "birds sing in the distance", [("birds sing", 0, 1, [[0.5, 1.2]])]),
        _item(
            "c3",
            "park.wav",
            "a dog barks while birds sing",
            [("a dog barks", 0, 2, [[0.6, 1.6]]), ("birds sing", 4, 5, [[2.4, 4.2]])],
        ),
        _item("c4", "park.wav", "dogs barking in a park", [("dogs barking", 0, 1, [[0.6, 1.6]])]),
    ]
    (data / "test.json").write_text(json.dumps(items))
    return paths


def _item(cap_id: str, audio_id: str, caption: str, phrases: list[tuple]) -> dict[str, Any]:
    return {
        "audiocap_id": cap_id,
        "audio_id": audio_id,
        "caption": caption,
        "tokens": caption.split(),
        "phrases": [
            {"phrase": text, "start_index": a, "end_index": b, "segments": segs} for text, a, b, segs in phrases
        ],
    }


def real_model_and_index(root: Path, work: Path) -> tuple[Any, Any]:
    """The band-detector model exported to ``work/model``, and an index of ``root`` in ``work/index``."""
    from acalign.infer.index import build_index, load_index
    from acalign.infer.model import load_model
    from acalign.infer.synthetic import save_band_detector

    model = load_model(save_band_detector(work / "model", threshold=0.5))
    build_index(model, root, work / "index")
    return model, load_index(work / "index", model)
