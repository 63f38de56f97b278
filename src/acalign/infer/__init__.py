"""Use a trained model on anyone's audio: ground phrases in time, index and search a library.

* :mod:`acalign.infer.model` — :func:`load_model` → :class:`AcalignModel` (embed, score, ground);
* :mod:`acalign.infer.grounding` — overlapping windows for recordings of any length, segments,
  output formats, the grounding plot;
* :mod:`acalign.infer.index` — :func:`build_index` / :func:`load_index`: an incremental FAISS
  index of an audio folder with exact frame-level re-ranking;
* :mod:`acalign.infer.synthetic` — a hand-set model and generated scenes with known answers.
"""

from __future__ import annotations

from acalign.infer.index import AudioIndex, SearchHit, build_index, load_index
from acalign.infer.model import AcalignModel, GroundingResult, load_model

__all__ = [
    "AcalignModel",
    "AudioIndex",
    "GroundingResult",
    "SearchHit",
    "build_index",
    "load_index",
    "load_model",
]
