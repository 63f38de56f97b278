"""Instrument recordings from sampled SoundFonts: short phrases of notes rendered with a synthesiser.

A SoundFont holds real recordings of instruments (a few samples per instrument, each a note at one
pitch, with loop points); playing its presets at other pitches and lengths is what a sampler
does. Each General MIDI preset a class asks for (``gm_programs``, ``gm_drums`` in the taxonomy)
is rendered into a few seeded phrases — scale runs, arpeggios, melodies, repeated notes, chords,
single hits or drum grooves — with the TinySoundFont synthesiser (PyPI ``tinysoundfont``, a
maintained binding of a small SoundFont 2/3 player; installed with ``--no-deps`` because its only
dependency, pyaudio, is for live playback). Renders are cached as WAV files keyed by the
soundfont, the preset and :data:`RENDER_VERSION`.

One SoundFont's instrument samples come from one recording session, so all the presets of one
class in one SoundFont form one recording family.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from acalign.errors import AcalignError

from .sources import Recording, file_duration
from .taxonomy import PackageInfo, Taxonomy

log = logging.getLogger(__name__)

RENDER_VERSION = 1
RECORDINGS_PER_CLASS = 24  # per SoundFont, spread over the class's presets
RELEASE_SECONDS = 0.8
INSTALL_HINT = "pip install --no-deps tinysoundfont==0.3.7 (or build with packages that hold no SoundFont)"

#: The comfortable written range (MIDI notes, low..high) of General MIDI melodic programs, by
#: groups of consecutive programs; programs not listed are left out (synth leads, pads, effects).
GM_RANGES: dict[range, tuple[int, int]] = {
    range(0, 8): (40, 88),  # pianos, harpsichord, clavinet
    range(8, 16): (60, 96),  # chromatic percussion: celesta .. dulcimer
    range(16, 21): (41, 84),  # organs, accordion-like reeds
    range(21, 24): (53, 84),  # accordion, harmonica, tango accordion
    range(24, 32): (40, 79),  # guitars
    range(32, 40): (28, 55),  # basses
    range(40, 41): (55, 91),  # violin
    range(41, 42): (48, 81),  # viola
    range(42, 43): (36, 69),  # cello
    range(43, 44): (28, 55),  # contrabass
    range(44, 46): (43, 84),  # tremolo / pizzicato strings
    range(46, 47): (36, 91),  # harp
    range(47, 48): (40, 55),  # timpani
    range(48, 53): (43, 84),  # ensembles, choir
    range(56, 57): (55, 82),  # trumpet
    range(57, 58): (40, 72),  # trombone
    range(58, 59): (28, 58),  # tuba
    range(59, 60): (55, 82),  # muted trumpet
    range(60, 61): (41, 77),  # french horn
    range(61, 62): (45, 80),  # brass section
    range(64, 65): (56, 87),  # soprano sax
    range(65, 66): (49, 80),  # alto sax
    range(66, 67): (44, 75),  # tenor sax
    range(67, 68): (36, 68),  # baritone sax
    range(68, 70): (58, 91),  # oboe, english horn
    range(70, 71): (34, 67),  # bassoon
    range(71, 72): (50, 89),  # clarinet
    range(72, 73): (74, 102),  # piccolo
    range(73, 80): (60, 96),  # flute, recorder, pan flute, bottle, shakuhachi, whistle, ocarina
    range(104, 112): (48, 84),  # sitar, banjo, shamisen, koto, kalimba, bagpipe, fiddle, shanai
    range(112, 116): (60, 90),  # tinkle bell, agogo, steel drums, woodblock
    range(116, 118): (40, 60),  # taiko, melodic tom
}
#: Programs that can sound several notes at once (chords are one of their phrase styles).
POLYPHONIC = set(range(0, 8)) | set(range(16, 32)) | set(range(46, 47)) | set(range(48, 53))
#: Drum kits worth rendering: the first preset of each GM kit group (others mostly repeat its
#: samples; Electronic and TR-808, programs 24-31, are synthesised drums and left out).
DRUM_KITS = (0, 8, 16, 32, 40, 48)
#: The GM drum notes that make a basic groove (bass drum, snare, closed hi-hat).
GROOVE_NOTES = (36, 38, 42)
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9), (0, 3, 5, 7, 10))


@dataclass(frozen=True)
class Note:
    """One note of a phrase: MIDI ``pitch``, ``onset`` and ``duration`` in seconds, ``velocity``."""

    pitch: int
    onset: float
    duration: float
    velocity: int


def program_range(program: int) -> tuple[int, int] | None:
    """The MIDI note range acalign plays GM ``program`` in, or ``None`` if it is never rendered."""
    for programs, notes in GM_RANGES.items():
        if program in programs:
            return notes
    return None


def melodic_phrase(program: int, rng: np.random.Generator) -> list[Note]:
    """A short phrase for a melodic program: a run, arpeggio, melody, repeated note, chords or
    one long note, within the program's range (:data:`GM_RANGES`), 1-6 s long."""
    low, high = program_range(program) or (48, 84)
    root = int(rng.integers(low, max(low + 1, high - 12)))
    scale = SCALES[int(rng.integers(len(SCALES)))]
    degrees = [root + 12 * octave + step for octave in range(3) for step in scale]
    degrees = [d for d in degrees if low <= d <= high] or [root]
    styles = ["run", "arpeggio", "melody", "repeat", "long"] + (["chords"] * 2 if program in POLYPHONIC else [])
    style = styles[int(rng.integers(len(styles)))]
    beat = float(rng.uniform(0.14, 0.45))
    velocity = int(rng.integers(55, 120))
    notes: list[Note] = []
    if style == "long":
        pitch = degrees[int(rng.integers(len(degrees)))]
        return [Note(pitch, 0.0, float(rng.uniform(1.0, 3.5)), velocity)]
    count = int(rng.integers(3, 11))
    if style == "chords":
        start = int(rng.integers(max(1, len(degrees) - 4)))
        for k in range(int(rng.integers(2, 5))):
            base = min(start + int(rng.integers(0, 3)), max(0, len(degrees) - 5))
            chord = degrees[base : base + 5 : 2]
            for pitch in chord:
                notes.append(Note(pitch, k * 2 * beat, 2 * beat * 0.95, velocity))
        return notes
    if style == "run":
        start = int(rng.integers(max(1, len(degrees) - count)))
        pitches = degrees[start : start + count]
        pitches = pitches[::-1] if rng.random() < 0.5 else pitches
    elif style == "arpeggio":
        start = int(rng.integers(max(1, len(degrees) - 5)))
        chord = degrees[start : start + 5 : 2] or [root]
        pitches = [chord[k % len(chord)] for k in range(count)]
    elif style == "repeat":
        pitches = [degrees[int(rng.integers(len(degrees)))]] * count
    else:
        position = int(rng.integers(len(degrees)))
        pitches = []
        for _ in range(count):
            position = int(np.clip(position + rng.integers(-2, 3), 0, len(degrees) - 1))
            pitches.append(degrees[position])
    onset = 0.0
    for pitch in pitches:
        length = beat * float(rng.choice([1.0, 1.0, 2.0, 0.5]))
        notes.append(Note(pitch, onset, length * float(rng.uniform(0.7, 1.0)), int(np.clip(velocity + rng.integers(-15, 16), 30, 127))))
        onset += length
    return notes


def drum_phrase(drum: int | None, rng: np.random.Generator) -> list[Note]:
    """Hits of one drum note (1-6, 0.15-0.6 s apart), or, for ``drum=None``, a 2-4 s groove of
    bass drum, snare and hi-hat."""
    if drum is not None:
        notes, onset = [], 0.0
        for _ in range(int(rng.integers(1, 7))):
            notes.append(Note(drum, onset, 0.1, int(rng.integers(60, 128))))
            onset += float(rng.uniform(0.15, 0.6))
        return notes
    kick, snare, hat = GROOVE_NOTES
    eighth = 30.0 / float(rng.uniform(80, 140))
    notes = []
    for step in range(int(rng.integers(16, 33))):
        onset = step * eighth
        notes.append(Note(hat, onset, 0.05, int(rng.integers(50, 90))))
        if step % 4 == 0 or (step % 8 == 7 and rng.random() < 0.5):
            notes.append(Note(kick, onset, 0.1, int(rng.integers(90, 127))))
        if step % 4 == 2:
            notes.append(Note(snare, onset, 0.1, int(rng.integers(80, 120))))
    return notes


class SoundFontRenderer:
    """Renders phrases of one SoundFont's presets with TinySoundFont, mono float32."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        """Load the SoundFont at ``path``; render at ``sample_rate`` Hz."""
        try:
            import tinysoundfont
        except ImportError:
            raise AcalignError(f"{path}: rendering a SoundFont needs the tinysoundfont package: {INSTALL_HINT}") from None
        self.sample_rate = sample_rate
        self.synth = tinysoundfont.Synth(samplerate=sample_rate, gain=0)
        try:
            self.sfid = self.synth.sfload(str(path))
        except Exception as exc:  # tinysoundfont raises its own SoundFontException
            raise AcalignError(f"{path}: not a readable SoundFont ({exc})") from None

    def has_preset(self, bank: int, program: int) -> bool:
        """Whether the SoundFont defines ``bank``/``program``."""
        try:
            return self.synth.sfpreset_name(self.sfid, bank, program) is not None
        except RuntimeError:
            return False

    def render(self, notes: Iterable[Note], *, bank: int, program: int) -> np.ndarray:
        """The notes played on ``bank``/``program``: ``shape=(samples,)`` float32 mono."""
        notes = sorted(notes, key=lambda n: n.onset)
        self.synth.notes_off()
        self.synth.sounds_off()
        self.synth.program_select(0, self.sfid, bank, program, is_drums=bank == 128)
        events = sorted(
            [(n.onset, 1, n) for n in notes] + [(n.onset + n.duration, 0, n) for n in notes],
            key=lambda e: (e[0], e[1]),
        )
        chunks, now = [], 0.0
        for time, is_on, note in events:
            chunks.append(self._generate(time - now))
            now = max(now, time)
            if is_on:
                self.synth.noteon(0, note.pitch, note.velocity)
            else:
                self.synth.noteoff(0, note.pitch)
        chunks.append(self._generate(RELEASE_SECONDS))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def _generate(self, seconds: float) -> np.ndarray:
        samples = int(round(max(0.0, seconds) * self.sample_rate))
        if samples == 0:
            return np.zeros(0, np.float32)
        stereo = np.frombuffer(self.synth.generate(samples), dtype=np.float32).reshape(-1, 2)
        return stereo.mean(axis=1)


@dataclass(frozen=True)
class _Preset:
    label: str
    bank: int
    program: int
    drum: int | None
    tag: str  # e.g. gm040, kit000-n038, kit000-groove


def _presets(taxonomy: Taxonomy, renderer: SoundFontRenderer) -> Iterator[_Preset]:
    for program in range(128):
        label = taxonomy.classify_instrument("", program=program)
        if label and program_range(program) and renderer.has_preset(0, program):
            yield _Preset(label, 0, program, None, f"gm{program:03d}")
    for kit in DRUM_KITS:
        if not renderer.has_preset(128, kit):
            continue
        for drum in range(27, 88):
            label = taxonomy.classify_instrument("", drum=drum)
            if label:
                yield _Preset(label, 128, kit, drum, f"kit{kit:03d}-n{drum:03d}")
        groove = next((c.name for c in taxonomy.classes.values() if c.name == "drum_kit"), None)
        if groove:
            yield _Preset(groove, 128, kit, None, f"kit{kit:03d}-groove")


def soundfont_recordings(
    taxonomy: Taxonomy,
    info: PackageInfo,
    marker: dict,
    root: Path,
    cache: Path,
    *,
    sample_rate: int,
    per_class: int = RECORDINGS_PER_CLASS,
    progress: Callable[[Iterable], Iterable] = iter,
) -> list[Recording]:
    """Render (or reuse) the instrument recordings of every SoundFont of an extracted package.

    Parameters
    ----------
    taxonomy : Taxonomy
        Classes with ``gm_programs`` / ``gm_drums`` say which presets to render.
    info, marker, root : PackageInfo, dict, Path
        The package, its extraction marker and the folder it was extracted to.
    cache : Path
        Renders go to ``cache/instruments/{package}/...``.
    sample_rate : int
        Hz of the rendered WAV files.
    per_class : int
        Phrases (each one recording) per class and SoundFont, spread evenly over the class's
        presets (at least one per preset).

    Returns
    -------
    list of Recording
        One per rendered phrase; the family is ``{package}:{soundfont}:{class}``.
    """
    fonts = [p for p in marker["files"] if any(fnmatch.fnmatchcase(p, g) for g in info.soundfonts)]
    recordings: list[Recording] = []
    for font in fonts:
        renderer = SoundFontRenderer(root / font, sample_rate)
        stem = Path(font).name
        out_root = cache / "instruments" / info.name / f"{stem}-v{RENDER_VERSION}-sr{sample_rate}"
        presets = list(_presets(taxonomy, renderer))
        per_label = Counter(p.label for p in presets)
        jobs = [(p, k) for p in presets for k in range(max(1, math.ceil(per_class / per_label[p.label])))]
        for preset, k in progress(jobs):
            name = f"{preset.tag}/{k:02d}.wav"
            target = out_root / name
            if not target.is_file():
                rng = np.random.default_rng([RENDER_VERSION, preset.bank, preset.program, preset.drum or 0, k])
                notes = (
                    drum_phrase(preset.drum, rng) if preset.bank == 128 else melodic_phrase(preset.program, rng)
                )
                _write_wav(target, renderer.render(notes, bank=preset.bank, program=preset.program), sample_rate)
            recordings.append(
                Recording(
                    recording_id=f"{info.name}/{font}#{name}",
                    label=preset.label,
                    family=f"{info.name}:{stem}:{preset.label}",
                    package=info.name,
                    version=marker["version"],
                    licence=marker["licence"],
                    path=f"{font}#{preset.tag}/{k:02d} (rendered with tinysoundfont)",
                    file=str(target),
                    duration=file_duration(target),
                )
            )
    return recordings


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    scaled = audio * (0.9 / peak) if peak > 0.9 else audio
    sf.write(str(tmp), scaled.astype(np.float32), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
