"""The corpus's sound classes: filename rules, recording families and caption phrase variants.

The curated taxonomy lives in ``taxonomy.yaml`` next to this module; :func:`load_taxonomy` reads
it (or a user's file of the same layout). Labels of a user's own library that no class knows get
phrase variants generated from the label text (:func:`class_for_label`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from acalign.config import load_yaml
from acalign.errors import AcalignError

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.yaml")
ROLES = ("event", "background", "both")
#: Packages never used as a source: tuxpaint's recordings are kept for an independent test of
#: generalisation.
RESERVED_PACKAGE = re.compile(r"tuxpaint")
# A trailing run of numbered suffixes: "fs_grass8", "sword_attack_01", "swordhit_10a", ".3", "-2".
_NUMBERED_SUFFIX = re.compile(r"([_\-. ]?\d+[a-z]?)+$")


@dataclass(frozen=True)
class PackageInfo:
    """A Debian package that ships recordings, and how to find its audio.

    Attributes
    ----------
    name : str
        The Debian package name.
    licence : str
        The package-level licence (its copyright file holds per-file details).
    archives : tuple of str
        Glob patterns of zip-like archives inside the package (zip, pk3, wz) whose audio
        members are extracted; a member's path reads ``ARCHIVE/MEMBER``.
    archive_prefix : str
        Only archive members under this prefix are kept (``audio/`` for 0 A.D.).
    soundfonts : tuple of str
        Glob patterns of SoundFont files (sf2/sf3) inside the package; their presets are
        rendered into instrument recordings (:mod:`acalign.data.corpus.instruments`).
    skip : tuple of str
        Regular expressions of paths never extracted (music, UI sounds).
    """

    name: str
    licence: str
    archives: tuple[str, ...] = ()
    archive_prefix: str = ""
    soundfonts: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()

    def skipped(self, path: str) -> bool:
        """Whether ``path`` (inside the package) is never extracted (music, UI sounds)."""
        return any(re.search(pattern, "/" + path) for pattern in self.skip)

    def is_archive(self, path: str) -> bool:
        """Whether ``path`` (inside the package) is one of its audio archives."""
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.archives)

    def is_soundfont(self, path: str) -> bool:
        """Whether ``path`` (inside the package) is one of its SoundFonts."""
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.soundfonts)


@dataclass(frozen=True)
class SourceRule:
    """Recordings of one package whose path matches ``match`` belong to a class."""

    package: str
    match: str
    family: str = "stem"

    def matches(self, package: str, path: str) -> bool:
        """Whether this rule takes the recording ``path`` of ``package``."""
        return package == self.package and re.search(self.match, path) is not None

    def family_of(self, path: str) -> str:
        """The recording family of ``path``: by ``stem`` or ``prefix`` (:func:`recording_family`),
        or, for any other value, the first group of that regular expression (e.g. a speaker)."""
        if self.family in ("stem", "prefix"):
            return recording_family(path, mode=self.family)
        found = re.search(self.family, path)
        return found.group(1) if found and found.groups() else recording_family(path)


@dataclass(frozen=True)
class Compose:
    """How short recordings (single footsteps, key presses) are strung into one event."""

    max_source: float = 0.8
    repeat: tuple[int, int] = (3, 8)
    gap: tuple[float, float] = (0.3, 0.6)
    same_family: bool = True


@dataclass(frozen=True)
class SpeechSpec:
    """espeak-ng voices that speak a class (e.g. ``en+f3`` for a woman)."""

    voices: tuple[str, ...]
    pitch: tuple[int, int] = (40, 60)
    speed: tuple[int, int] = (150, 175)


@dataclass(frozen=True)
class SoundClass:
    """One sound class: its role, phrase variants and where its recordings come from.

    ``audioset`` names the AudioSet ontology class it corresponds to (``None`` where no name
    fits). ``gm_programs`` (General MIDI melodic programs, 0-127) and ``gm_drums`` (GM drum
    notes, 35-81) take the instrument recordings rendered from every SoundFont package.
    """

    name: str
    role: str
    clauses: tuple[str, ...]
    nouns: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    sources: tuple[SourceRule, ...] = ()
    compose: Compose | None = None
    speech: SpeechSpec | None = None
    audioset: str | None = None
    gm_programs: tuple[int, ...] = ()
    gm_drums: tuple[int, ...] = ()

    @property
    def is_event(self) -> bool:
        """Whether recordings of this class are placed as foreground events."""
        return self.role in ("event", "both")

    @property
    def is_background(self) -> bool:
        """Whether recordings of this class may fill a clip as its background."""
        return self.role in ("background", "both")


@dataclass(frozen=True)
class Taxonomy:
    """Packages, classes (in match order), the sentences espeak-ng speaks, and the packages
    held out of training for the ``test_unseen`` split."""

    packages: dict[str, PackageInfo]
    classes: dict[str, SoundClass]
    speech_sentences: tuple[str, ...] = field(default_factory=tuple)
    unseen_packages: tuple[str, ...] = ()

    def classify(self, package: str, path: str) -> tuple[str, str] | None:
        """Return ``(class name, family)`` of a recording, or ``None`` when no rule takes it."""
        for sound_class in self.classes.values():
            for rule in sound_class.sources:
                if rule.matches(package, path):
                    return sound_class.name, f"{package}:{rule.family_of(path)}"
        return None

    def classify_instrument(self, package: str, *, program: int | None = None, drum: int | None = None) -> str | None:
        """The class of a rendered GM ``program`` (melodic) or ``drum`` note, or ``None``."""
        for sound_class in self.classes.values():
            if program is not None and program in sound_class.gm_programs:
                return sound_class.name
            if drum is not None and drum in sound_class.gm_drums:
                return sound_class.name
        return None


def check_package_allowed(name: str) -> None:
    """Raise :class:`AcalignError` for a package reserved for the independent test (tuxpaint)."""
    if RESERVED_PACKAGE.search(name):
        raise AcalignError(
            f"package {name!r} is reserved for an independent test of generalisation and is never "
            "a corpus source"
        )


def recording_family(path: str, *, mode: str = "stem") -> str:
    """Return the recording family of a file: numbered variants of one session share it.

    ``mode="stem"`` strips trailing numbers (``fs_grass1`` .. ``fs_grass8`` → ``fs_grass``);
    ``mode="prefix"`` keeps the name up to its first ``-`` or ``_`` (``conf-adminmenu-162`` →
    ``conf``). The directory is part of the family so equal names in two folders stay apart.

    >>> recording_family("audio/actor/singlesteps/fs_grass3.ogg")
    'audio/actor/singlesteps/fs_grass'
    """
    posix = PurePosixPath(path)
    stem = posix.name.split(".")[0] if mode == "stem" else posix.stem
    if mode == "prefix":
        family = re.split(r"[-_]", stem, maxsplit=1)[0]
    else:
        family = _NUMBERED_SUFFIX.sub("", stem)
        if not family:  # a purely numeric name ("01-0"): its leading number is the family
            family = re.split(r"[-_. ]", stem, maxsplit=1)[0]
    parent = str(posix.parent)
    return family if parent in ("", ".") else f"{parent}/{family}"


def load_taxonomy(path: str | os.PathLike | None = None) -> Taxonomy:
    """Read a taxonomy YAML file (default: the curated one shipped with acalign).

    Raises:
        AcalignError: the file is missing, not YAML, or a class is malformed (named in the
            message with the file).
    """
    path = Path(path) if path is not None else TAXONOMY_FILE
    if path == TAXONOMY_FILE:
        return _curated_taxonomy()
    return _parse_taxonomy(load_yaml(path), str(path))


@lru_cache(maxsize=1)
def _curated_taxonomy() -> Taxonomy:
    return _parse_taxonomy(load_yaml(TAXONOMY_FILE), str(TAXONOMY_FILE))


def _parse_taxonomy(data: dict[str, Any], source: str) -> Taxonomy:
    packages = {
        name: _parse_package(name, spec or {}, source) for name, spec in (data.get("packages") or {}).items()
    }
    classes = {
        name: _parse_class(name, spec or {}, source) for name, spec in (data.get("classes") or {}).items()
    }
    if not classes:
        raise AcalignError(f"{source}: the taxonomy defines no classes")
    unseen = tuple(str(p) for p in data.get("unseen_packages", ()))
    unknown = [p for p in unseen if p not in packages]
    if unknown:
        raise AcalignError(f"{source}: unseen_packages names unknown packages: {', '.join(unknown)}")
    return Taxonomy(packages, classes, tuple(str(s) for s in data.get("speech_sentences", ())), unseen)


def _parse_package(name: str, spec: dict[str, Any], source: str) -> PackageInfo:
    check_package_allowed(name)
    archives = spec.get("archives", [spec["zip"]] if spec.get("zip") else [])
    for pattern in spec.get("skip", ()):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise AcalignError(f"{source}: package {name!r}: bad skip pattern {pattern!r} ({exc})") from None
    return PackageInfo(
        name=name,
        licence=str(spec.get("licence", "unknown")),
        archives=tuple(str(a) for a in archives),
        archive_prefix=str(spec.get("archive_prefix", spec.get("zip_prefix", ""))),
        soundfonts=tuple(str(s) for s in spec.get("soundfonts", ())),
        skip=tuple(spec.get("skip", ())),
    )


def _parse_class(name: str, spec: dict[str, Any], source: str) -> SoundClass:
    where = f"{source}: class {name!r}"
    role = spec.get("role", "event")
    if role not in ROLES:
        raise AcalignError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    clauses, nouns = tuple(spec.get("clauses", ())), tuple(spec.get("nouns", ()))
    if not clauses or not nouns:
        raise AcalignError(f"{where}: needs at least one clause and one noun phrase")
    for phrase in clauses + nouns:
        if phrase != clean_phrase(phrase):
            raise AcalignError(f"{where}: phrase {phrase!r} must be lowercase words without punctuation")
    sources = []
    for rule in spec.get("sources", ()):
        if "package" not in rule or "match" not in rule:
            raise AcalignError(f"{where}: every source needs 'package' and 'match'")
        try:
            re.compile(rule["match"])
        except re.error as exc:
            raise AcalignError(f"{where}: bad regular expression {rule['match']!r} ({exc})") from None
        family = rule.get("family", "stem")
        if family not in ("stem", "prefix"):
            try:
                if re.compile(family).groups < 1:
                    raise AcalignError(f"{where}: family pattern {family!r} needs a (group)")
            except re.error as exc:
                raise AcalignError(f"{where}: bad family pattern {family!r} ({exc})") from None
        sources.append(SourceRule(rule["package"], rule["match"], family))
    compose = spec.get("compose")
    speech = spec.get("speech")
    programs = tuple(int(p) for p in spec.get("gm_programs", ()))
    drums = tuple(int(d) for d in spec.get("gm_drums", ()))
    if any(not 0 <= p <= 127 for p in programs) or any(not 27 <= d <= 87 for d in drums):
        raise AcalignError(f"{where}: gm_programs must be within 0..127 and gm_drums within 27..87")
    return SoundClass(
        name=name,
        role=role,
        clauses=clauses,
        nouns=nouns,
        aliases=tuple(str(a).lower() for a in spec.get("aliases", ())),
        sources=tuple(sources),
        audioset=str(spec["audioset"]) if spec.get("audioset") else None,
        gm_programs=programs,
        gm_drums=drums,
        compose=Compose(
            max_source=float(compose.get("max_source", 0.8)),
            repeat=tuple(compose.get("repeat", (3, 8))),
            gap=tuple(compose.get("gap", (0.3, 0.6))),
            same_family=bool(compose.get("same_family", True)),
        )
        if compose
        else None,
        speech=SpeechSpec(
            voices=tuple(speech["voices"]),
            pitch=tuple(speech.get("pitch", (40, 60))),
            speed=tuple(speech.get("speed", (150, 175))),
        )
        if speech
        else None,
    )


def clean_phrase(text: str) -> str:
    """Lowercase ``text`` and keep only words of letters, digits and apostrophe-free tokens."""
    words = re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("_", " ").replace("-", " ")).split()
    return " ".join(words)


def class_for_label(label: str, taxonomy: Taxonomy, *, role: str = "event") -> SoundClass:
    """Return the class a user's label means: a curated class whose alias or name it is, else
    a new class whose phrase variants are generated from the label text.

    >>> class_for_label("church_bells", load_taxonomy()).nouns[:2]
    ('church bells', 'the sound of church bells')
    """
    key = label.strip().lower()
    for sound_class in taxonomy.classes.values():
        if key == sound_class.name or key in sound_class.aliases:
            return SoundClass(
                name=sound_class.name,
                role=role,
                clauses=sound_class.clauses,
                nouns=sound_class.nouns,
                aliases=sound_class.aliases,
                compose=sound_class.compose,
            )
    words = clean_phrase(label)
    if not words:
        raise AcalignError(f"label {label!r} has no letters or digits to build a phrase from")
    article = "" if words.endswith("s") and not words.endswith("ss") else _article(words)
    subject = f"{article}{words}"
    return SoundClass(
        name=key,
        role=role,
        clauses=(f"{subject} is heard", f"there is {subject}", f"{subject} sounds"),
        nouns=tuple(dict.fromkeys((subject, f"the sound of {subject}", f"{words} sound", words))),
    )


def _article(words: str) -> str:
    return "an " if words[0] in "aeiou" else "a "
