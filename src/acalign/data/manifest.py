"""AudioGrounding-style manifests: clip → captions → tokens → phrases (token span + segments).

Two on-disk layouts are read into one in-memory model (see SPEC §1):

* **v1** — pandas column-oriented JSON, one row per phrase (``audiocap_id``, ``filename``,
  ``caption``, ``tokens``, ``soundtag``, ``start_word``, ``timestamps``);
* **v2** — a list of audio items (``audiocap_id``, ``audio_id``, ``tokens``, ``phrases`` with
  ``phrase``, ``start_index``, inclusive ``end_index`` and ``segments``).

``[[0, 0]]`` marks a phrase that was not annotated; it is kept as such
(:attr:`Phrase.annotated` is ``False``) and is never an event.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acalign.config import atomic_write_json, read_json
from acalign.errors import DataError

NOT_ANNOTATED: tuple[tuple[float, float], ...] = ((0.0, 0.0),)


@dataclass(frozen=True)
class Segment:
    """One ``[onset, offset]`` stretch of a clip, in seconds."""

    onset: float
    offset: float

    @property
    def duration(self) -> float:
        """Length of the segment in seconds."""
        return self.offset - self.onset


@dataclass
class Phrase:
    """A sound phrase of a caption: tokens ``[start_index, end_index]`` (inclusive) and segments."""

    text: str
    start_index: int
    end_index: int
    segments: list[Segment] = field(default_factory=list)
    annotated: bool = True

    @property
    def span(self) -> slice:
        """Slice into the caption's tokens covering this phrase."""
        return slice(self.start_index, self.end_index + 1)

    @property
    def events(self) -> list[Segment]:
        """Segments that count as events (none for an unannotated phrase)."""
        return self.segments if self.annotated else []


@dataclass
class Caption:
    """One caption of a clip with its tokens and sound phrases."""

    caption_id: str
    text: str
    tokens: list[str]
    phrases: list[Phrase] = field(default_factory=list)

    def phrase_tokens(self, phrase: Phrase) -> list[str]:
        """Tokens of ``phrase`` within this caption."""
        return self.tokens[phrase.span]


@dataclass
class Clip:
    """An audio clip and all its captions."""

    audio_id: str
    captions: list[Caption] = field(default_factory=list)
    duration: float | None = None


@dataclass
class Manifest:
    """An ordered collection of clips read from (or to be written to) one file."""

    clips: list[Clip]
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    @property
    def n_captions(self) -> int:
        """Number of captions over all clips."""
        return sum(len(c.captions) for c in self.clips)

    @property
    def n_phrases(self) -> int:
        """Number of phrases over all captions."""
        return sum(len(cap.phrases) for c in self.clips for cap in c.captions)

    def captions(self) -> Iterator[tuple[Clip, Caption]]:
        """Yield every (clip, caption) pair in order."""
        for clip in self.clips:
            for caption in clip.captions:
                yield clip, caption

    def by_audio_id(self) -> dict[str, Clip]:
        """Map audio id → clip."""
        return {c.audio_id: c for c in self.clips}

    def validate(self, audio_dir: str | os.PathLike | None = None) -> None:
        """Check the manifest's consistency; raise :class:`DataError` naming file, clip and field.

        Checks: non-empty ids and tokens, phrase spans inside their caption, onset ≤ offset,
        no negative times, no duplicate clip or caption ids, and — when ``audio_dir`` is given —
        that every clip's audio file exists there.
        """
        seen_clips: set[str] = set()
        seen_captions: set[str] = set()
        for clip in self.clips:
            where = f"{self.source}: clip {clip.audio_id!r}"
            if not clip.audio_id:
                raise DataError(f"{self.source}: a clip has an empty audio_id")
            if clip.audio_id in seen_clips:
                raise DataError(f"{where}: duplicate audio_id")
            seen_clips.add(clip.audio_id)
            for caption in clip.captions:
                cwhere = f"{where}, caption {caption.caption_id!r}"
                if caption.caption_id in seen_captions:
                    raise DataError(f"{cwhere}: duplicate audiocap_id")
                seen_captions.add(caption.caption_id)
                if not caption.tokens:
                    raise DataError(f"{cwhere}: field 'tokens' is empty")
                for phrase in caption.phrases:
                    _validate_phrase(phrase, caption, cwhere)
            if audio_dir is not None and not (Path(audio_dir) / clip.audio_id).is_file():
                raise DataError(f"{where}: audio file {Path(audio_dir) / clip.audio_id} is missing")


def _validate_phrase(phrase: Phrase, caption: Caption, where: str) -> None:
    pwhere = f"{where}, phrase {phrase.text!r}"
    n = len(caption.tokens)
    if not (0 <= phrase.start_index <= phrase.end_index < n):
        raise DataError(
            f"{pwhere}: span [{phrase.start_index}, {phrase.end_index}] is outside the caption's "
            f"{n} tokens"
        )
    for seg in phrase.segments:
        if seg.onset < 0 or seg.offset < 0:
            raise DataError(f"{pwhere}: negative time in segment [{seg.onset}, {seg.offset}]")
        if seg.onset > seg.offset:
            raise DataError(f"{pwhere}: onset {seg.onset} > offset {seg.offset}")


# --------------------------------------------------------------------------- reading


def read_manifest(path: str | os.PathLike, *, validate: bool = True) -> Manifest:
    """Read a v1 or v2 AudioGrounding manifest (layout detected from the content).

    Args:
        path: the JSON file.
        validate: run :meth:`Manifest.validate` (without the audio check) after reading.

    Raises:
        DataError: the file is missing, not JSON, or not in either layout.
    """
    path = Path(path)
    data = read_json(path, what="manifest file", error=DataError)
    if isinstance(data, dict) and "soundtag" in data:
        manifest = _parse_v1(data, str(path))
    elif isinstance(data, list):
        manifest = _parse_v2(data, str(path))
    else:
        raise DataError(
            f"{path}: neither AudioGrounding v1 (column JSON with 'soundtag') nor v2 "
            "(a list of audio items)"
        )
    if validate:
        manifest.validate()
    return manifest


def _segments(raw: Any, where: str) -> tuple[list[Segment], bool]:
    """Parse ``[[on, off], ...]``; return (segments, annotated)."""
    if not isinstance(raw, list) or not all(
        isinstance(s, (list, tuple)) and len(s) == 2 for s in raw
    ):
        raise DataError(f"{where}: field 'segments' must be a list of [onset, offset] pairs")
    try:
        pairs = [(float(a), float(b)) for a, b in raw]
    except (TypeError, ValueError):
        raise DataError(f"{where}: field 'segments' holds a non-numeric time") from None
    annotated = tuple(pairs) != NOT_ANNOTATED
    return [Segment(a, b) for a, b in pairs], annotated


def _require(item: dict, key: str, where: str) -> Any:
    if key not in item:
        raise DataError(f"{where}: missing field {key!r}")
    return item[key]


def _tokens(raw: Any, where: str) -> list[str]:
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return list(raw)
    raise DataError(f"{where}: field 'tokens' must be a list of strings or a string")


def _parse_v1(data: dict, source: str) -> Manifest:
    columns = ("audiocap_id", "filename", "caption", "tokens", "soundtag", "start_word", "timestamps")
    for col in columns:
        if col not in data:
            raise DataError(f"{source}: v1 manifest is missing column {col!r}")
    clips: dict[str, Clip] = {}
    captions: dict[str, Caption] = {}
    for row in data["audiocap_id"]:
        values = {}
        for col in columns:
            if row not in data[col]:
                raise DataError(f"{source}: row {row} is missing field {col!r}")
            values[col] = data[col][row]
        audio_id = str(values["filename"])
        cap_id = str(values["audiocap_id"])
        where = f"{source}: clip {audio_id!r}, caption {cap_id!r}"
        clip = clips.setdefault(audio_id, Clip(audio_id=audio_id))
        caption = captions.get(cap_id)
        if caption is None:
            caption = Caption(cap_id, str(values["caption"]), _tokens(values["tokens"], where))
            captions[cap_id] = caption
            clip.captions.append(caption)
        elif caption not in clip.captions:
            raise DataError(f"{where}: audiocap_id appears under two clips")
        phrase_tokens = str(values["soundtag"]).split()
        start = int(values["start_word"])
        segments, annotated = _segments(values["timestamps"], f"{where}, phrase {values['soundtag']!r}")
        caption.phrases.append(
            Phrase(str(values["soundtag"]), start, start + len(phrase_tokens) - 1, segments, annotated)
        )
    return Manifest(list(clips.values()), source)


def _parse_v2(items: list, source: str) -> Manifest:
    clips: dict[str, Clip] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{source}: item {i} is not an object")
        audio_id = str(_require(item, "audio_id", f"{source}: item {i}"))
        cap_id = str(_require(item, "audiocap_id", f"{source}: clip {audio_id!r}"))
        where = f"{source}: clip {audio_id!r}, caption {cap_id!r}"
        tokens = _tokens(_require(item, "tokens", where), where)
        text = str(item.get("caption", " ".join(tokens)))
        caption = Caption(cap_id, text, tokens)
        for j, ph in enumerate(_require(item, "phrases", where)):
            pwhere = f"{where}, phrase {j}"
            if not isinstance(ph, dict):
                raise DataError(f"{pwhere}: not an object")
            raw_phrase = _require(ph, "phrase", pwhere)
            phrase_text = " ".join(raw_phrase) if isinstance(raw_phrase, list) else str(raw_phrase)
            segments, annotated = _segments(_require(ph, "segments", pwhere), pwhere)
            try:
                start = int(_require(ph, "start_index", pwhere))
                end = int(_require(ph, "end_index", pwhere))
            except (TypeError, ValueError):
                raise DataError(f"{pwhere}: start_index/end_index must be integers") from None
            caption.phrases.append(Phrase(phrase_text, start, end, segments, annotated))
        clip = clips.setdefault(audio_id, Clip(audio_id=audio_id))
        if "duration" in item and item["duration"] is not None:
            clip.duration = float(item["duration"])
        clip.captions.append(caption)
    return Manifest(list(clips.values()), source)


# --------------------------------------------------------------------------- writing


def manifest_to_v2(manifest: Manifest) -> list[dict[str, Any]]:
    """Return the manifest as v2 audio items (one per caption), ready for JSON."""
    items = []
    for clip, caption in manifest.captions():
        item: dict[str, Any] = {
            "audiocap_id": caption.caption_id,
            "audio_id": clip.audio_id,
            "caption": caption.text,
            "tokens": caption.tokens,
            "phrases": [
                {
                    "phrase": p.text,
                    "start_index": p.start_index,
                    "end_index": p.end_index,
                    "segments": [[s.onset, s.offset] for s in p.segments]
                    if p.annotated
                    else [list(NOT_ANNOTATED[0])],
                }
                for p in caption.phrases
            ],
        }
        if clip.duration is not None:
            item["duration"] = clip.duration
        items.append(item)
    return items


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> None:
    """Write ``manifest`` as a v2 JSON file, atomically."""
    atomic_write_json(path, manifest_to_v2(manifest), indent=1)
