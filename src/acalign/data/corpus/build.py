"""Build the embedded corpus: recordings → family splits → clip plans → mixed clips → manifests.

Everything random flows from ``CorpusConfig.seed`` through per-clip generators
(``default_rng([seed, split, index])``), so the same settings give byte-identical manifests and
audio whatever the number of workers, and an interrupted build resumes clip by clip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import multiprocessing.pool
import os
import shutil
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from acalign.config import (
    MAX_SEED,
    atomic_write_json,
    atomic_write_yaml,
    from_dict,
    load_yaml,
    require_directory_path,
    to_dict,
)
from acalign.data.manifest import Clip, Manifest, write_manifest
from acalign.errors import AcalignError, DataError

from .captions import Mention, generate_captions, merge_segments
from .library import read_library
from .mixing import (
    BackgroundPlan,
    ClipPlan,
    EventPlan,
    MixConfig,
    Piece,
    PlacedEvent,
    prepare_recording,
    prepared_path,
    render_clip,
    write_wav,
)
from .report import corpus_stats, write_attribution, write_used_catalogue
from .sources import (
    DEFAULT_PACKAGES,
    AptFetcher,
    Recording,
    ensure_package,
    find_espeak,
    package_recordings,
    speech_recordings,
    write_catalogue,
)
from .taxonomy import SoundClass, load_taxonomy

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (60, 12, 18),
    "small": (400, 40, 60),
    "default": (2000, 200, 300),
    "large": (8000, 400, 600),
}
CAPTIONS_PER_CLIP = {"train": 1, "val": 5, "test": 5}
CONFIG_FILE = "corpus.yaml"


@dataclass
class CorpusConfig:
    """Every setting that shapes a corpus; saved as ``corpus.yaml`` inside it."""

    seed: int = 0
    clips: list[int] = field(default_factory=lambda: list(SIZES["default"]))
    packages: list[str] = field(default_factory=lambda: list(DEFAULT_PACKAGES))
    speech: bool = True
    library: str | None = None
    labels: str | None = None
    taxonomy: str | None = None
    sample_rate: int = 32000
    clip_seconds: float = 10.0
    threshold_db: float = -35.0
    masking_db: float = -10.0
    min_recordings: int = 3
    event_count_probs: list[float] = field(default_factory=lambda: [0.3, 0.35, 0.25, 0.1])
    repeat_class_prob: float = 0.1
    background_prob: float = 0.75
    background_mention_prob: float = 0.5
    background_level_db: list[float] = field(default_factory=lambda: [-32.0, -24.0])
    snr_db: list[float] = field(default_factory=lambda: [3.0, 20.0])
    distant_prob: float = 0.15
    distant_snr_db: list[float] = field(default_factory=lambda: [-4.0, 2.0])
    excerpt_seconds: list[float] = field(default_factory=lambda: [2.0, 6.0])
    max_event_seconds: float = 8.0
    val_fraction: float = 0.10
    test_fraction: float = 0.15

    @property
    def mix(self) -> MixConfig:
        """The signal settings used by preparation and mixing."""
        return MixConfig(self.sample_rate, self.clip_seconds, self.threshold_db, self.masking_db)

    def validate(self) -> None:
        """Raise :class:`AcalignError` for settings that cannot build a corpus."""
        if len(self.clips) != 3 or any(int(n) < 1 for n in self.clips):
            raise AcalignError(f"clips must be three positive counts (train, val, test), got {self.clips}")
        if (self.library is None) != (self.labels is None):
            raise AcalignError("--library and --labels go together")
        if self.library is None and not self.packages:
            raise AcalignError("no packages selected and no --library given")
        if not 0 <= self.seed <= MAX_SEED:
            raise AcalignError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        if not 8000 <= self.sample_rate <= 48000:
            raise AcalignError(f"sample_rate must be within 8000..48000 Hz, got {self.sample_rate}")
        if self.min_recordings < 1:
            raise AcalignError(f"min_recordings must be at least 1, got {self.min_recordings}")
        if not 0 < self.max_event_seconds <= self.clip_seconds:
            raise AcalignError(
                f"max_event_seconds must be within (0, clip_seconds={self.clip_seconds}], "
                f"got {self.max_event_seconds}"
            )


@dataclass
class BuildResult:
    """What a build produced: the output folder, statistics and timings (seconds)."""

    out: Path
    stats: dict[str, Any]
    timings: dict[str, float]


# --------------------------------------------------------------------------- recordings


def collect_recordings(
    config: CorpusConfig, *, cache: Path, debs_dirs: Sequence[Path] = (), progress: bool = True
) -> tuple[list[Recording], dict[str, SoundClass]]:
    """Gather the recordings a build draws on (packages + espeak speech, or a user library)."""
    taxonomy = load_taxonomy(config.taxonomy)
    if config.library is not None:
        return read_library(config.library, config.labels, taxonomy)
    fetcher = AptFetcher(cache, debs_dirs=debs_dirs)
    recordings: list[Recording] = []
    for package in config.packages:
        if package not in taxonomy.packages:
            known = ", ".join(sorted(taxonomy.packages))
            raise AcalignError(f"package {package!r} is not in the taxonomy; known: {known}")
        marker = ensure_package(fetcher, taxonomy.packages[package], cache / "audio" / package, progress=progress)
        recordings += package_recordings(taxonomy, marker, cache / "audio" / package)
    speech_classes = [c for c in taxonomy.classes.values() if c.speech is not None]
    if config.speech and speech_classes:
        espeak = find_espeak(fetcher, cache)
        bar = _bar(progress, desc="espeak-ng speech", unit="utt")
        recordings += speech_recordings(espeak, taxonomy, speech_classes, cache, progress=bar)
    write_catalogue(sorted(recordings, key=lambda r: r.recording_id), cache / "catalogue.csv")
    return sorted(recordings, key=lambda r: r.recording_id), dict(taxonomy.classes)


def prepare_all(
    recordings: Sequence[Recording], cache: Path, mix: MixConfig, *, workers: int, progress: bool = True
) -> list[Recording]:
    """Decode/trim every recording into the cache (in parallel); drop silent ones.

    Returns the recordings with ``duration`` set (seconds of audible audio).
    """
    durations: dict[str, float] = {}
    jobs = [(rec, cache, mix) for rec in recordings]
    with _pool(workers) as pool:
        results = pool.imap_unordered(_prepare_job, jobs, chunksize=8) if pool else map(_prepare_job, jobs)
        for rec_id, duration in _bar(progress, desc="preparing recordings", unit="file", total=len(jobs))(results):
            durations[rec_id] = duration
    kept = []
    for rec in recordings:
        duration = durations[rec.recording_id]
        if duration >= 0.05:
            rec.duration = round(duration, 3)
            kept.append(rec)
        elif duration < 0:
            log.warning("%s: cannot be decoded, left out", rec.recording_id)
        else:
            log.warning("%s: silent or shorter than 50 ms, left out", rec.recording_id)
    return kept


def _prepare_job(job: tuple[Recording, Path, MixConfig]) -> tuple[str, float]:
    try:
        return prepare_recording(*job)
    except DataError:  # one broken file in a package must not stop the build
        return job[0].recording_id, -1.0


# --------------------------------------------------------------------------- splits


def assign_splits(
    recordings: Sequence[Recording], *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.15
) -> dict[str, str]:
    """Assign every recording family to one split; return family → split.

    Per class (in name order): with ≥ 3 families, the smallest family goes to test and the next
    to val, the rest (largest first) to whichever split is furthest below its share of the
    class's recordings; with 2 families the smaller goes to test, the other to train; a single
    family goes to train. A family shared by several classes keeps its first assignment.
    """
    families: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rec in recordings:
        families[rec.label][rec.family] += 1
    targets = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    assignment: dict[str, str] = {}
    for label in sorted(families):
        sizes = families[label]
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        shuffled = [sorted(sizes)[i] for i in rng.permutation(len(sizes))]
        ascending = sorted(shuffled, key=lambda f: sizes[f])  # stable: ties keep the shuffle
        counts = {s: 0 for s in SPLITS}
        for fam in ascending:
            if fam in assignment:
                counts[assignment[fam]] += sizes[fam]
        free = [f for f in ascending if f not in assignment]
        if len(sizes) >= 3:
            for split in ("test", "val"):
                if free and not _has_family(sizes, assignment, split):
                    fam = free.pop(0)
                    assignment[fam] = split
                    counts[split] += sizes[fam]
        elif len(sizes) == 2 and free and not _has_family(sizes, assignment, "test"):
            fam = free.pop(0)
            assignment[fam] = "test"
            counts["test"] += sizes[fam]
        total = sum(sizes.values())
        for fam in reversed(free):
            if len(sizes) < 3:
                split = "train"
            else:
                split = max(SPLITS, key=lambda s: targets[s] * total - counts[s])
            assignment[fam] = split
            counts[split] += sizes[fam]
    return assignment


def _has_family(sizes: dict[str, int], assignment: dict[str, str], split: str) -> bool:
    return any(assignment.get(f) == split for f in sizes)


# --------------------------------------------------------------------------- planning


@dataclass
class _SplitPool:
    """Recordings of one split, by class, for planning."""

    events: dict[str, list[Recording]]
    backgrounds: dict[str, list[Recording]]
    by_family: dict[str, list[Recording]]


def _split_pool(recordings: Sequence[Recording], classes: dict[str, SoundClass], split_of: dict[str, str], split: str) -> _SplitPool:
    events: dict[str, list[Recording]] = defaultdict(list)
    backgrounds: dict[str, list[Recording]] = defaultdict(list)
    by_family: dict[str, list[Recording]] = defaultdict(list)
    for rec in recordings:
        if split_of[rec.family] != split:
            continue
        sound_class = classes[rec.label]
        if sound_class.is_event:
            events[rec.label].append(rec)
        if sound_class.is_background:
            backgrounds[rec.label].append(rec)
        by_family[(rec.label, rec.family)].append(rec)
    return _SplitPool(dict(events), dict(backgrounds), dict(by_family))


def plan_clip(
    config: CorpusConfig, classes: dict[str, SoundClass], pool: _SplitPool, *, split: str, index: int
) -> ClipPlan:
    """Draw one clip's background and events from its own seeded generator."""
    split_index = SPLITS.index(split)
    rng = np.random.default_rng([config.seed, split_index, index])
    sr = config.sample_rate
    n = round(config.clip_seconds * sr)
    background = BackgroundPlan(label=None, recording=None, level_db=float(rng.uniform(*config.background_level_db)))
    if pool.backgrounds and rng.random() < config.background_prob:
        label = _choice(rng, sorted(pool.backgrounds))
        rec = _choice(rng, pool.backgrounds[label])
        room = max(1, round(rec.duration * sr) - n)
        background = BackgroundPlan(label, rec.recording_id, int(rng.integers(room)), background.level_db)
    labels = [lab for lab in sorted(pool.events) if lab != background.label]
    if not labels:
        raise AcalignError(f"split {split}: no event class has recordings")
    probs = np.asarray(config.event_count_probs, dtype=float)
    count = min(int(rng.choice(len(probs), p=probs / probs.sum())) + 1, len(labels))
    chosen = [labels[i] for i in rng.choice(len(labels), size=count, replace=False)]
    if rng.random() < config.repeat_class_prob and count < len(probs):
        chosen.append(chosen[0])  # the same class twice: its phrase covers both segments
    events = [_plan_event(config, classes[label], pool, rng) for label in chosen]
    return ClipPlan(f"{split}_{index:05d}.wav", split, int(rng.integers(2**31)), background, events)


def _plan_event(config: CorpusConfig, sound_class: SoundClass, pool: _SplitPool, rng: np.random.Generator) -> EventPlan:
    sr = config.sample_rate
    rec = _choice(rng, pool.events[sound_class.name])
    length = round(rec.duration * sr)
    compose = sound_class.compose
    if compose is not None and rec.duration < compose.max_source:
        same = pool.by_family[(rec.label, rec.family)] if compose.same_family else pool.events[rec.label]
        pieces, offset = [], 0
        for _ in range(int(rng.integers(compose.repeat[0], compose.repeat[1] + 1))):
            piece = _choice(rng, same)
            pieces.append(Piece(piece.recording_id, 0, round(piece.duration * sr), offset))
            offset += round(rng.uniform(*compose.gap) * sr)
            if offset >= config.max_event_seconds * sr:
                break
    elif rec.duration > config.max_event_seconds or (
        sound_class.speech is None and rec.duration > config.excerpt_seconds[1]
    ):
        high = min(config.excerpt_seconds[1], config.max_event_seconds)
        excerpt = round(rng.uniform(config.excerpt_seconds[0], high) * sr)
        start = int(rng.integers(max(1, length - excerpt)))
        pieces = [Piece(rec.recording_id, start, excerpt, 0, fade=True)]
    else:
        pieces = [Piece(rec.recording_id, 0, length, 0)]
    distant = bool(rng.random() < config.distant_prob)
    snr = rng.uniform(*(config.distant_snr_db if distant else config.snr_db))
    return EventPlan(sound_class.name, pieces, float(rng.random()), float(snr), distant)


def _choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


# --------------------------------------------------------------------------- rendering


def _render_job(job: tuple[ClipPlan, dict[str, str], MixConfig, Path, Path]) -> dict[str, Any]:
    plan, prepared, mix, wav_path, meta_path = job
    audio, placed = render_clip(plan, prepared, mix)
    write_wav(wav_path, audio, mix.sample_rate)
    meta = {
        "audio_id": plan.audio_id,
        "background": {"label": plan.background.label, "recording": plan.background.recording},
        "events": [asdict(e) for e in placed],
    }
    atomic_write_json(meta_path, meta, indent=None)
    return meta


def render_split(
    plans: Sequence[ClipPlan],
    prepared: dict[str, str],
    config: CorpusConfig,
    out: Path,
    *,
    workers: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Render (or reuse, when already written) every clip of a split; return their metadata."""
    metas: dict[str, dict[str, Any]] = {}
    jobs = []
    for plan in plans:
        wav = out / "audio" / plan.split / plan.audio_id
        meta_path = out / ".work" / plan.split / f"{plan.audio_id}.json"
        if wav.is_file() and meta_path.is_file():
            metas[plan.audio_id] = json.loads(meta_path.read_text())
            continue
        needed = {p.recording for e in plan.events for p in e.pieces}
        if plan.background.recording:
            needed.add(plan.background.recording)
        jobs.append((plan, {r: prepared[r] for r in needed}, config.mix, wav, meta_path))
    split = plans[0].split if plans else ""
    bar = _bar(progress, desc=f"mixing {split}", unit="clip", total=len(jobs))
    with _pool(workers) as pool:
        results = pool.imap_unordered(_render_job, jobs, chunksize=4) if pool else map(_render_job, jobs)
        for meta in bar(results):
            metas[meta["audio_id"]] = meta
    return [metas[p.audio_id] for p in plans]


def _clip_manifest_entry(
    meta: dict[str, Any], classes: dict[str, SoundClass], config: CorpusConfig, *, split: str, index: int
) -> Clip:
    events = [PlacedEvent(**e) for e in meta["events"]]
    by_label: dict[str, list[PlacedEvent]] = defaultdict(list)
    for event in events:
        by_label[event.label].append(event)
    mentions = [
        Mention(
            classes[label],
            merge_segments([(e.onset, e.offset) for e in group]),
            count=len(group),
            distant=all(e.distant for e in group),
        )
        for label, group in sorted(by_label.items())
    ]
    bg_label = meta["background"]["label"]
    background = (
        Mention(classes[bg_label], [(0.0, config.clip_seconds)], background=True) if bg_label else None
    )
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index, 1])
    stem = meta["audio_id"].rsplit(".", 1)[0]
    captions = generate_captions(
        mentions, background, rng, count=CAPTIONS_PER_CLIP[split], id_prefix=stem
    ) if mentions else []
    return Clip(meta["audio_id"], captions, duration=config.clip_seconds)


# --------------------------------------------------------------------------- orchestration


def build_corpus(
    config: CorpusConfig,
    out: str | os.PathLike,
    *,
    cache: str | os.PathLike,
    debs_dirs: Sequence[str | os.PathLike] = (),
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build (or resume) a corpus in ``out``; see the module docstring and ``acalign corpus build``.

    Writes ``{train,val,test}.json`` (v2 manifests), ``audio/{split}/*.wav``, ``events/{split}.json``
    (every placed event), ``catalogue.csv``, ``SOURCES.md``, ``licences/``, ``stats.json`` and
    ``corpus.yaml`` (this config); ``build_info.json`` holds the timings.

    Raises:
        AcalignError: ``out`` holds a corpus built with other settings (unless ``force``), or
            the sources cannot be fetched.
    """
    config.validate()
    out, cache = require_directory_path(out), Path(cache).expanduser()
    workers = max(1, workers or os.cpu_count() or 1)
    _check_previous(config, out, force=force)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    recordings, classes = collect_recordings(config, cache=cache, debs_dirs=[Path(d) for d in debs_dirs], progress=progress)
    timings["collect"] = time.perf_counter() - clock

    clock = time.perf_counter()
    recordings = prepare_all(recordings, cache, config.mix, workers=workers, progress=progress)
    recordings, dropped = _keep_classes(recordings, classes, config.min_recordings)
    if dropped:
        log.info("classes left out (fewer than %d recordings): %s", config.min_recordings, ", ".join(dropped))
    split_of = assign_splits(recordings, seed=config.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    prepared = {r.recording_id: str(prepared_path(r, cache, config.sample_rate, config.threshold_db)) for r in recordings}
    timings["prepare"] = time.perf_counter() - clock

    clock = time.perf_counter()
    atomic_write_yaml(out / CONFIG_FILE, to_dict(config))
    _invalidate_stale_clips(out, _fingerprint(recordings, classes, split_of))
    manifests, metas = {}, {}
    for split, n_clips in zip(SPLITS, config.clips, strict=True):
        pool = _split_pool(recordings, classes, split_of, split)
        plans = [plan_clip(config, classes, pool, split=split, index=i) for i in range(int(n_clips))]
        metas[split] = render_split(plans, prepared, config, out, workers=workers, progress=progress)
        clips = [_clip_manifest_entry(m, classes, config, split=split, index=i) for i, m in enumerate(metas[split])]
        manifests[split] = Manifest(clips, source=str(out / f"{split}.json"))
        manifests[split].validate(out / "audio" / split)
        write_manifest(manifests[split], out / f"{split}.json")
        atomic_write_json(out / "events" / f"{split}.json", metas[split], indent=None)
    timings["mix"] = time.perf_counter() - clock

    stats = corpus_stats(manifests, metas, recordings, split_of, classes, config.clip_seconds, dropped)
    atomic_write_json(out / "stats.json", stats)
    write_used_catalogue(recordings, split_of, metas, out / "catalogue.csv")
    write_attribution(recordings, metas, out, cache)
    timings = {k: round(v, 2) for k, v in timings.items()}
    atomic_write_json(out / "build_info.json", {"timings_s": timings, "workers": workers})
    return BuildResult(out, stats, timings)


def _keep_classes(
    recordings: Sequence[Recording], classes: dict[str, SoundClass], min_recordings: int
) -> tuple[list[Recording], list[str]]:
    counts: dict[str, int] = defaultdict(int)
    for rec in recordings:
        counts[rec.label] += 1
    dropped = sorted(label for label, n in counts.items() if n < min_recordings)
    kept = [r for r in recordings if r.label not in dropped]
    if not any(classes[r.label].is_event for r in kept):
        raise AcalignError(f"no event class has at least {min_recordings} recordings")
    return kept, dropped


def _fingerprint(recordings: Sequence[Recording], classes: dict[str, SoundClass], split_of: dict[str, str]) -> str:
    """A digest of what clips are drawn from (recordings, classes, splits)."""
    content = json.dumps(
        [
            [[r.recording_id, r.label, r.family, r.duration, split_of[r.family]] for r in recordings],
            sorted(repr(c) for c in classes.values()),
        ]
    )
    return hashlib.sha256(content.encode()).hexdigest()


def _invalidate_stale_clips(out: Path, fingerprint: str) -> None:
    """Forget finished clips when the sources changed since they were mixed (same settings,
    other recordings or taxonomy), so a resumed build never mixes two source sets."""
    work = out / ".work"
    stamp = work / "fingerprint"
    if stamp.is_file() and stamp.read_text() == fingerprint:
        return
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stamp.write_text(fingerprint)


def _check_previous(config: CorpusConfig, out: Path, *, force: bool) -> None:
    previous = out / CONFIG_FILE
    if not previous.is_file() or force:
        return
    if from_dict(CorpusConfig, load_yaml(previous), source=str(previous)) != config:
        raise AcalignError(
            f"{out}: holds a corpus built with other settings ({previous}); choose another --out "
            "or pass --force to rebuild it"
        )


@contextmanager
def _pool(workers: int) -> Iterator[multiprocessing.pool.Pool | None]:
    """A process pool (fork where available, so workers share the parent's imports); ``None``
    for one worker, which then runs in this process."""
    if workers <= 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    pool = multiprocessing.get_context("fork" if "fork" in methods else None).Pool(workers)
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _bar(enabled: bool, **kwargs: Any) -> Callable[[Iterable], Iterable]:
    def wrap(items: Iterable) -> Iterable:
        return tqdm(items, disable=not enabled, dynamic_ncols=True, **kwargs)

    return wrap


def build_config(
    *, size: str = "default", clips: Sequence[int] | None = None, **overrides: Any
) -> CorpusConfig:
    """Return a :class:`CorpusConfig` for a named ``size`` (or explicit ``clips``) and overrides."""
    if size not in SIZES:
        raise AcalignError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    counts = list(clips) if clips is not None else list(SIZES[size])
    return CorpusConfig(clips=[int(n) for n in counts], **overrides)
