"""The embedded corpus: AudioGrounding-style clips mixed from real recordings Debian ships.

``build_corpus(config, out, cache=...)`` fetches the packages (``apt``, ``sources``), renders
SoundFont instruments (``instruments``) and espeak-ng speech (``speech``), classifies the
recordings (``taxonomy``), drops copies shipped twice (``dedup``), holds whole packages out for
``test_unseen`` and splits the rest by recording family (``splits``), plans (``planning``) and
mixes 10 s clips with exact event timestamps (``mixing``), writes captions with phrase spans
(``captions``), and the statistics and attribution of what it used (``report``); ``audit``
draws contact sheets of every class's recordings. ``acalign corpus`` is its command line.
"""

from __future__ import annotations

from .build import SIZES, BuildResult, CorpusConfig, build_config, build_corpus
from .report import format_summary
from .sources import Recording, default_cache_dir, read_catalogue
from .splits import SPLITS, assign_splits
from .taxonomy import SoundClass, Taxonomy, class_for_label, load_taxonomy, recording_family

__all__ = [
    "SIZES",
    "SPLITS",
    "BuildResult",
    "CorpusConfig",
    "Recording",
    "SoundClass",
    "Taxonomy",
    "assign_splits",
    "build_config",
    "build_corpus",
    "class_for_label",
    "default_cache_dir",
    "format_summary",
    "load_taxonomy",
    "read_catalogue",
    "recording_family",
]
