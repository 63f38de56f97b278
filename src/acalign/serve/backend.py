"""The serve app's only contact with the model and the index.

Every call into :mod:`acalign.infer` goes through one module-level function here, and comes back
as the small dataclasses below, so a change in the inference API touches this file only.
Probing uploads lives here too: the app must know whether a file is audio before it hands it
to the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acalign.errors import DataError


@dataclass(frozen=True)
class PhraseGrounding:
    """One phrase grounded in one clip.

    ``times`` and ``activation`` have the same shape ``(frames,)``; ``segments`` are
    ``(onset, offset, score)`` triples in seconds.
    """

    phrase: str
    times: np.ndarray
    activation: np.ndarray
    segments: list[tuple[float, float, float]]


@dataclass(frozen=True)
class IndexedFile:
    """A file of the index: its id (the only handle the web page gets), path and duration."""

    file_id: str
    path: Path
    duration: float | None = None


@dataclass(frozen=True)
class SearchHit:
    """One ranked search result with its best-matching span in seconds."""

    file_id: str
    score: float
    onset: float
    offset: float


def load_model(path: str | os.PathLike) -> Any:
    """Load an exported model directory (see :func:`acalign.infer.model.load_model`)."""
    from acalign.infer.model import load_model as _load

    return _load(path)


def load_index(path: str | os.PathLike, model: Any) -> Any:
    """Open an index directory built by ``acalign index`` for searching with ``model``."""
    from acalign.infer.index import load_index as _load

    return _load(path, model)


def model_threshold(model: Any) -> float | None:
    """The model's default detection threshold (chosen on validation), if it has one."""
    value = getattr(model, "threshold", None)
    return None if value is None else float(value)


def ground(
    model: Any,
    path: str | os.PathLike,
    phrases: list[str],
    *,
    threshold: float | None = None,
) -> list[PhraseGrounding]:
    """Ground ``phrases`` in the audio file ``path`` with ``model`` (streamed: any length)."""
    results = model.ground(Path(path), phrases, threshold=threshold)
    return [
        PhraseGrounding(
            phrase=str(r.phrase),
            times=np.asarray(r.times, dtype=np.float64),
            activation=np.asarray(r.activation, dtype=np.float64),
            segments=[(float(on), float(off), float(sc)) for on, off, sc in r.segments],
        )
        for r in results
    ]


def indexed_files(index: Any) -> list[IndexedFile]:
    """Every file of ``index``, in the index's order."""
    return [
        IndexedFile(str(f.file_id), Path(f.path), None if f.duration is None else float(f.duration))
        for f in index.files()
    ]


def search(index: Any, query: str, k: int) -> list[SearchHit]:
    """The ``k`` best files of ``index`` for the text ``query``, best first."""
    return [
        SearchHit(str(h.file_id), float(h.score), float(h.onset), float(h.offset))
        for h in index.search(query, k=k)
    ]


@dataclass(frozen=True)
class AudioInfo:
    """What a successful probe learnt about an audio file."""

    sample_rate: int
    duration: float


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Check that ``path`` is audio libsndfile decodes (header and first samples), cheaply.

    Raises:
        DataError: the file is not decodable audio, or holds no samples.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as audio:
            head = audio.read(4096, dtype="float32", always_2d=True)
            info = AudioInfo(int(audio.samplerate), audio.frames / float(audio.samplerate))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        # libsndfile's own reason, without the (temporary) path that str(exc) repeats
        reason = getattr(exc, "error_string", "") or str(exc).splitlines()[0] or type(exc).__name__
        raise DataError(f"not a decodable audio file ({reason.rstrip('.')})") from None
    if head.shape[0] == 0:
        raise DataError("the audio file holds no samples")
    return info
