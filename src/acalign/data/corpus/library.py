"""A user's own labelled sound library as corpus recordings (ESC-50-like ``file,label`` CSV)."""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path

from acalign.errors import DataError

from .sources import Recording, file_duration, is_audio_path
from .taxonomy import ROLES, SoundClass, Taxonomy, class_for_label, recording_family

REQUIRED_COLUMNS = ("file", "label")
OPTIONAL_COLUMNS = ("family", "licence", "role")


def read_library(
    folder: str | os.PathLike, labels: str | os.PathLike, taxonomy: Taxonomy
) -> tuple[list[Recording], dict[str, SoundClass]]:
    """Read ``labels`` (columns ``file,label`` and optionally ``family,licence,role``).

    ``file`` is relative to ``folder``. A label that names a curated class (or one of its
    aliases, e.g. ESC-50's ``dog``) takes that class's phrases; any other label gets phrases
    generated from its text. ``role`` is ``event`` (default), ``background`` or ``both``.

    Returns:
        The recordings (sorted by id) and the classes they use, by class name.

    Raises:
        DataError: naming the CSV file and line for a missing column, file or bad role.
    """
    folder, labels = Path(folder), Path(labels)
    if not folder.is_dir():
        raise DataError(f"{folder}: library folder not found")
    if not labels.is_file():
        raise DataError(f"{labels}: labels file not found")
    with labels.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{labels}: missing column(s) {', '.join(missing)}; expected file,label")
        rows = [({k.strip(): (v or "").strip() for k, v in row.items() if k}, i + 2) for i, row in enumerate(reader)]
    recordings: dict[str, Recording] = {}
    classes: dict[str, SoundClass] = {}
    for row, line in rows:
        recording, sound_class = _row_recording(row, line, folder, labels, taxonomy)
        previous = classes.get(sound_class.name)
        if previous is not None and previous.role != sound_class.role:
            sound_class = _merged_role(previous, sound_class)
        classes[sound_class.name] = sound_class
        recordings[recording.recording_id] = recording
    if not recordings:
        raise DataError(f"{labels}: no rows")
    return sorted(recordings.values(), key=lambda r: r.recording_id), classes


def _row_recording(
    row: dict[str, str], line: int, folder: Path, labels: Path, taxonomy: Taxonomy
) -> tuple[Recording, SoundClass]:
    where = f"{labels}: line {line}"
    rel, label = row.get("file", ""), row.get("label", "")
    if not rel or not label:
        raise DataError(f"{where}: empty file or label")
    path = folder / rel
    if not path.is_file():
        raise DataError(f"{where}: audio file {path} not found")
    if not is_audio_path(rel):
        raise DataError(f"{where}: {rel} is not a .wav/.ogg/.flac file")
    role = row.get("role") or "event"
    if role not in ROLES:
        raise DataError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    sound_class = class_for_label(label, taxonomy, role=role)
    family = row.get("family") or recording_family(rel)
    recording = Recording(
        recording_id=f"library/{rel}",
        label=sound_class.name,
        family=f"library:{family}",
        package="library",
        version="local",
        licence=row.get("licence") or "as given by the library's owner",
        path=rel,
        file=str(path.resolve()),
        duration=file_duration(path),
    )
    return recording, sound_class


def _merged_role(a: SoundClass, b: SoundClass) -> SoundClass:
    """A label used both as event and as background in one library is a 'both' class."""
    return replace(a, role="both")
