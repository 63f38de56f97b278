"""acalign: unsupervised audio–caption aligning.

Learns, from clip-level audio–caption pairs only, which stretch of a clip each phrase of its
caption describes; then grounds phrases in any recording and searches audio by text.
"""

from __future__ import annotations

__version__ = "0.1.0"

from acalign.errors import AcalignError, DataError, ModelError

__all__ = ["AcalignError", "DataError", "ModelError", "__version__", "load_model"]


def load_model(path):  # noqa: ANN001, ANN201 - thin lazy re-export, documented at the target
    """Load an exported model directory; see :func:`acalign.infer.model.load_model`."""
    from acalign.infer.model import load_model as _load

    return _load(path)
