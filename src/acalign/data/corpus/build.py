"""Build the embedded corpus: recordings → duplicates dropped → splits → clip plans → mixed clips
→ manifests.

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
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
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

from .apt import AptFetcher
from .captions import Mention, generate_captions, merge_segments
from .dedup import duplicate_groups
from .instruments import soundfont_recordings
from .library import read_library
from .mixing import (
    ClipPlan,
    MixConfig,
    PlacedEvent,
    load_fingerprint,
    prepare_recording,
    prepared_path,
    render_clip,
    write_wav,
)
from .planning import PlanSettings, plan_clip, split_pool
from .report import corpus_stats, write_attribution, write_used_catalogue
from .sources import Recording, ensure_package, package_recordings, write_catalogue
from .speech import find_espeak, speech_recordings
from .splits import SPLITS, drop_duplicates, family_splits, unseen_split
from .taxonomy import SoundClass, Taxonomy, check_package_allowed, load_taxonomy

log = logging.getLogger(__name__)

#: Clips per split: train, val, test, test_unseen.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (60, 12, 18, 18),
    "small": (400, 40, 60, 60),
    "default": (3000, 300, 300, 300),
    "large": (20000, 1000, 1000, 1000),
}
CAPTIONS_PER_CLIP = {"train": 1, "val": 5, "test": 5, "test_unseen": 5}
CONFIG_FILE = "corpus.yaml"


@dataclass
class CorpusConfig:
    """Every setting that shapes a corpus; saved as ``corpus.yaml`` inside it.

    ``packages`` ``None`` takes every package of the taxonomy; ``unseen_packages`` ``None``
    takes the taxonomy's held-out packages (``[]``: no ``test_unseen`` split). ``clips`` gives
    train, val, test and test_unseen clip counts (three counts: test_unseen as many as test).
    """

    seed: int = 0
    clips: list[int] = field(default_factory=lambda: list(SIZES["default"]))
    packages: list[str] | None = None
    unseen_packages: list[str] | None = None
    speech: bool = True
    library: str | None = None
    labels: str | None = None
    taxonomy: str | None = None
    sample_rate: int = 32000
    clip_seconds: float = 10.0
    threshold_db: float = -35.0
    masking_db: float = -10.0
    min_recordings: int = 3
    soundfont_recordings: int = 24
    event_count_probs: list[float] = field(default_factory=lambda: [0.25, 0.35, 0.25, 0.15])
    repeat_class_prob: float = 0.1
    overlap_prob: float = 0.3
    background_prob: float = 0.8
    background_mention_prob: float = 0.5
    background_level_db: list[float] = field(default_factory=lambda: [-34.0, -22.0])
    snr_db: list[float] = field(default_factory=lambda: [-2.0, 24.0])
    distant_prob: float = 0.15
    distant_snr_db: list[float] = field(default_factory=lambda: [-6.0, 2.0])
    excerpt_seconds: list[float] = field(default_factory=lambda: [2.0, 6.0])
    max_event_seconds: float = 8.0
    val_fraction: float = 0.10
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if len(self.clips) == 3:
            self.clips = [*self.clips, self.clips[2]]

    @property
    def mix(self) -> MixConfig:
        """The signal settings used by preparation and mixing."""
        return MixConfig(self.sample_rate, self.clip_seconds, self.threshold_db, self.masking_db)

    @property
    def plan(self) -> PlanSettings:
        """The settings clip planning reads."""
        return PlanSettings(**{f.name: getattr(self, f.name) for f in fields(PlanSettings)})

    def validate(self) -> None:
        """Raise :class:`AcalignError` for settings that cannot build a corpus."""
        if len(self.clips) != 4 or any(int(n) < 0 for n in self.clips) or min(self.clips[:3]) < 1:
            raise AcalignError(
                f"clips must be positive counts for train, val and test (and test_unseen >= 0), got {self.clips}"
            )
        if (self.library is None) != (self.labels is None):
            raise AcalignError("--library and --labels go together")
        if self.library is None and self.packages is not None and not self.packages:
            raise AcalignError("no packages selected and no --library given")
        for name in [*(self.packages or ()), *(self.unseen_packages or ())]:
            check_package_allowed(name)
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
        if not 0 <= self.overlap_prob <= 1:
            raise AcalignError(f"overlap_prob must be within [0, 1], got {self.overlap_prob}")

    def source_packages(self, taxonomy: Taxonomy) -> list[str]:
        """The packages drawn from: ``packages``, or every package of the taxonomy."""
        return list(taxonomy.packages) if self.packages is None else list(self.packages)

    def held_out_packages(self, taxonomy: Taxonomy) -> list[str]:
        """The packages of ``test_unseen`` among the source packages."""
        held = taxonomy.unseen_packages if self.unseen_packages is None else self.unseen_packages
        sources = set(self.source_packages(taxonomy))
        return [p for p in held if p in sources]


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
    """Gather the recordings a build draws on (packages, rendered SoundFonts and espeak speech,
    or a user library), sorted by id, and the classes by name."""
    taxonomy = load_taxonomy(config.taxonomy)
    if config.library is not None:
        return read_library(config.library, config.labels, taxonomy)
    fetcher = AptFetcher(cache, debs_dirs=debs_dirs)
    recordings: list[Recording] = []
    for package in config.source_packages(taxonomy):
        if package not in taxonomy.packages:
            known = ", ".join(sorted(taxonomy.packages))
            raise AcalignError(f"package {package!r} is not in the taxonomy; known: {known}")
        info = taxonomy.packages[package]
        root = cache / "audio" / package
        marker = ensure_package(fetcher, info, root, progress=progress)
        recordings += package_recordings(taxonomy, marker, root)
        if info.soundfonts:
            bar = _bar(progress, desc=f"rendering {package}", unit="phrase")
            recordings += soundfont_recordings(
                taxonomy, info, marker, root, cache, sample_rate=config.sample_rate,
                per_class=config.soundfont_recordings, progress=bar,
            )
    speech_classes = [c for c in taxonomy.classes.values() if c.speech is not None]
    if config.speech and speech_classes:
        espeak = find_espeak(fetcher, cache)
        bar = _bar(progress, desc="espeak-ng speech", unit="utt")
        recordings += speech_recordings(espeak, taxonomy, speech_classes, cache, progress=bar)
    recordings.sort(key=lambda r: r.recording_id)
    write_catalogue(recordings, cache / "catalogue.csv")
    return recordings, dict(taxonomy.classes)


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


def deduplicate(
    recordings: Sequence[Recording], cache: Path, mix: MixConfig, *, held_out: Sequence[str] = ()
) -> tuple[list[Recording], dict[str, str]]:
    """Drop copies of one recording shipped by several packages (or twice by one).

    Returns the recordings kept and ``dropped copy id → kept id``.
    """
    prints = [load_fingerprint(rec, cache, mix) for rec in recordings]
    groups = duplicate_groups([r.duration for r in recordings], prints)
    result = drop_duplicates(recordings, groups, held_out=held_out)
    if result.dropped:
        log.info("%d duplicate recordings left out", len(result.dropped))
    return result.recordings, result.dropped


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
            snr_db=max(e.snr_db for e in group),
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
        mentions, background, rng, count=CAPTIONS_PER_CLIP[split], id_prefix=stem,
        mention_background=config.background_mention_prob,
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

    Writes ``{train,val,test,test_unseen}.json`` (v2 manifests; ``test_unseen`` when held-out
    packages are among the sources), ``audio/{split}/*.wav``, ``events/{split}.json`` (every
    placed event), ``catalogue.csv``, ``SOURCES.md``, ``licences/``, ``stats.json`` and
    ``corpus.yaml`` (this config); ``build_info.json`` holds the timings.

    Raises
    ------
    AcalignError
        ``out`` holds a corpus built with other settings (unless ``force``), or the sources
        cannot be fetched.
    """
    config.validate()
    out, cache = require_directory_path(out), Path(cache).expanduser()
    workers = max(1, workers or os.cpu_count() or 1)
    _check_previous(config, out, force=force)
    taxonomy = load_taxonomy(config.taxonomy)
    held_out = [] if config.library is not None else config.held_out_packages(taxonomy)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    recordings, classes = collect_recordings(config, cache=cache, debs_dirs=[Path(d) for d in debs_dirs], progress=progress)
    timings["collect"] = time.perf_counter() - clock

    clock = time.perf_counter()
    recordings = prepare_all(recordings, cache, config.mix, workers=workers, progress=progress)
    recordings, duplicates = deduplicate(recordings, cache, config.mix, held_out=held_out)
    seen, unseen = unseen_split(recordings, held_out)
    seen, dropped = _keep_classes(seen, classes, config.min_recordings)
    unseen = [r for r in unseen if r.label not in dropped]
    recordings = sorted(seen + unseen, key=lambda r: r.recording_id)
    if dropped:
        log.info("classes left out (fewer than %d recordings): %s", config.min_recordings, ", ".join(dropped))
    split_of = family_splits(
        seen, unseen, seed=config.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction
    )
    prepared = {r.recording_id: str(prepared_path(r, cache, config.sample_rate, config.threshold_db)) for r in recordings}
    timings["prepare"] = time.perf_counter() - clock

    clock = time.perf_counter()
    atomic_write_yaml(out / CONFIG_FILE, to_dict(config))
    _invalidate_stale_clips(out, _fingerprint(recordings, classes, split_of))
    manifests, metas = {}, {}
    for split, n_clips in zip(SPLITS, config.clips, strict=True):
        if split == "test_unseen" and (not unseen or not n_clips):
            _remove_split(out, split)
            continue
        pool = split_pool(recordings, classes, split_of, split)
        plans = [plan_clip(config.plan, classes, pool, split=split, index=i) for i in range(int(n_clips))]
        metas[split] = render_split(plans, prepared, config, out, workers=workers, progress=progress)
        clips = [_clip_manifest_entry(m, classes, config, split=split, index=i) for i, m in enumerate(metas[split])]
        manifests[split] = Manifest(clips, source=str(out / f"{split}.json"))
        manifests[split].validate(out / "audio" / split)
        write_manifest(manifests[split], out / f"{split}.json")
        atomic_write_json(out / "events" / f"{split}.json", metas[split], indent=None)
    timings["mix"] = time.perf_counter() - clock

    stats = corpus_stats(manifests, metas, recordings, split_of, classes, config.clip_seconds, dropped)
    stats["held_out_packages"] = held_out
    stats["duplicates_dropped"] = len(duplicates)
    atomic_write_json(out / "stats.json", stats)
    atomic_write_json(out / "duplicates.json", duplicates)
    write_used_catalogue(recordings, split_of, metas, out / "catalogue.csv")
    write_attribution(recordings, metas, out, cache)
    timings = {k: round(v, 2) for k, v in timings.items()}
    atomic_write_json(out / "build_info.json", {"timings_s": timings, "workers": workers})
    return BuildResult(out, stats, timings)


def _remove_split(out: Path, split: str) -> None:
    """Remove what an earlier build with other settings wrote for ``split``."""
    for path in (out / f"{split}.json", out / "events" / f"{split}.json"):
        path.unlink(missing_ok=True)
    if (out / "audio" / split).is_dir():
        shutil.rmtree(out / "audio" / split)


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
