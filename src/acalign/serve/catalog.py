"""The clips the page can pick: files of the index and, with ``--data``, clips of a corpus.

Each clip gets an opaque id. The page only ever sends ids; paths are looked up here and never
built from a request, which is what keeps ``/api/audio/{id}`` from reading arbitrary files.
A corpus clip that is also an indexed file (same resolved path) is listed once, under its
index id, with its captions attached.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from acalign.data.manifest import Caption, read_manifest
from acalign.errors import DataError
from acalign.serve.backend import IndexedFile

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class CatalogClip:
    """One playable clip: id, display name, file, where it came from, its captions if any."""

    clip_id: str
    name: str
    path: Path
    source: str  # "index" or "data"
    split: str | None = None
    duration: float | None = None
    captions: list[Caption] = field(default_factory=list)

    def matches(self, needle: str) -> bool:
        """Whether the lower-case ``needle`` occurs in the name or a caption."""
        if needle in self.name.lower():
            return True
        return any(needle in c.text.lower() for c in self.captions)


class Catalog:
    """Id → clip lookup over the index's files and the corpus's clips."""

    def __init__(self, clips: list[CatalogClip]) -> None:
        self._clips = clips
        self._by_id = {c.clip_id: c for c in clips}

    def __len__(self) -> int:
        return len(self._clips)

    def get(self, clip_id: str) -> CatalogClip | None:
        """The clip with this id, or ``None``."""
        return self._by_id.get(clip_id)

    def filter(self, query: str = "", *, offset: int = 0, limit: int = 200) -> tuple[int, list[CatalogClip]]:
        """Clips whose name or captions contain ``query`` (case-insensitive): (total, page)."""
        needle = query.strip().lower()
        found = [c for c in self._clips if c.matches(needle)] if needle else self._clips
        return len(found), found[offset : offset + limit]


def build_catalog(files: list[IndexedFile], data_dir: str | os.PathLike | None) -> Catalog:
    """Build the catalog from the index's files and, if given, the corpus at ``data_dir``.

    Raises:
        DataError: ``data_dir`` is given but holds no ``{train,val,test}.json``.
    """
    clips = [CatalogClip(f.file_id, f.file_id, f.path, "index", duration=f.duration) for f in files]
    if data_dir is None:
        return Catalog(clips)
    by_path = {_resolved(c.path): c for c in clips}
    for split, clip_path, clip in _corpus_clips(Path(data_dir)):
        indexed = by_path.get(_resolved(clip_path))
        if indexed is not None:
            indexed.split, indexed.captions = split, clip.captions
            indexed.duration = indexed.duration or clip.duration
            continue
        clip_id = f"{split}-{len(clips)}"
        clips.append(
            CatalogClip(clip_id, f"{split}/{clip.audio_id}", clip_path, "data", split, clip.duration, clip.captions)
        )
    return Catalog(clips)


def _corpus_clips(data_dir: Path):  # noqa: ANN202 - private generator
    """Yield (split, audio path, clip) for every corpus clip whose audio exists."""
    manifests = [(s, data_dir / f"{s}.json") for s in SPLITS if (data_dir / f"{s}.json").is_file()]
    if not manifests:
        raise DataError(f"{data_dir}: no train.json, val.json or test.json (expected a corpus directory)")
    for split, manifest_path in manifests:
        missing = 0
        for clip in read_manifest(manifest_path):
            path = data_dir / "audio" / split / clip.audio_id
            if not path.is_file():
                missing += 1
                continue
            yield split, path, clip
        if missing:
            log.warning("%s: %d clip(s) have no audio under %s", manifest_path, missing, data_dir / "audio" / split)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path
