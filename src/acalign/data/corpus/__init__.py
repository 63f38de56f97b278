"""The embedded corpus: AudioGrounding-style clips mixed from real recordings Debian ships.

``build_corpus(config, out, cache=...)`` fetches the packages (``sources``), classifies their
recordings (``taxonomy``), splits them by recording family, mixes 10 s clips with exact event
timestamps (``mixing``), writes captions with phrase spans (``captions``) and the statistics and
attribution of what it used (``report``). ``acalign corpus build`` is its command line.
"""

from __future__ import annotations

from .build import SIZES, BuildResult, CorpusConfig, assign_splits, build_config, build_corpus
from .report import format_summary
from .sources import DEFAULT_PACKAGES, Recording, default_cache_dir, read_catalogue
from .taxonomy import SoundClass, Taxonomy, class_for_label, load_taxonomy, recording_family

__all__ = [
    "DEFAULT_PACKAGES",
    "SIZES",
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
