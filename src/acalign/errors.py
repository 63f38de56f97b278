"""One exception family for everything a user can get wrong.

The CLI prints an :class:`AcalignError`'s message on one line and exits non-zero; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class AcalignError(ValueError):
    """A user-facing error: bad input, a missing file, an incompatible model."""


class DataError(AcalignError):
    """A manifest, caption, audio or feature file is missing or malformed."""


class ModelError(AcalignError):
    """A model directory is missing, incomplete or from an incompatible version."""
