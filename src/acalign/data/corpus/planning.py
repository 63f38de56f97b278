"""Clip plans: which background and which events a clip holds, how loud, and where.

Every random choice of clip ``index`` of a split comes from its own generator
(``default_rng([seed, split, index])``), so plans do not depend on the order or the number of
workers, and a resumed build draws the same clips.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from acalign.errors import AcalignError

from .mixing import BackgroundPlan, ClipPlan, EventPlan, Piece
from .sources import Recording
from .splits import SPLITS
from .taxonomy import SoundClass


@dataclass(frozen=True)
class PlanSettings:
    """The corpus settings planning reads (a subset of ``CorpusConfig``)."""

    seed: int
    sample_rate: int
    clip_seconds: float
    event_count_probs: Sequence[float]
    repeat_class_prob: float
    overlap_prob: float
    background_prob: float
    background_level_db: Sequence[float]
    snr_db: Sequence[float]
    distant_prob: float
    distant_snr_db: Sequence[float]
    excerpt_seconds: Sequence[float]
    max_event_seconds: float


@dataclass
class SplitPool:
    """Recordings of one split, by class, for planning."""

    events: dict[str, list[Recording]]
    backgrounds: dict[str, list[Recording]]
    by_family: dict[tuple[str, str], list[Recording]]


def split_pool(
    recordings: Sequence[Recording], classes: dict[str, SoundClass], split_of: dict[str, str], split: str
) -> SplitPool:
    """The recordings whose family belongs to ``split``, as events and backgrounds by class."""
    events: dict[str, list[Recording]] = defaultdict(list)
    backgrounds: dict[str, list[Recording]] = defaultdict(list)
    by_family: dict[tuple[str, str], list[Recording]] = defaultdict(list)
    for rec in recordings:
        if split_of[rec.family] != split:
            continue
        sound_class = classes[rec.label]
        if sound_class.is_event:
            events[rec.label].append(rec)
        if sound_class.is_background:
            backgrounds[rec.label].append(rec)
        by_family[(rec.label, rec.family)].append(rec)
    return SplitPool(dict(events), dict(backgrounds), dict(by_family))


def plan_clip(
    settings: PlanSettings, classes: dict[str, SoundClass], pool: SplitPool, *, split: str, index: int
) -> ClipPlan:
    """Draw one clip's background and events from its own seeded generator.

    With probability ``overlap_prob`` each event after the first is placed so that it starts
    inside an earlier event (sounds that overlap in time); otherwise anywhere in the clip.
    """
    rng = np.random.default_rng([settings.seed, SPLITS.index(split), index])
    sr = settings.sample_rate
    n = round(settings.clip_seconds * sr)
    background = BackgroundPlan(label=None, recording=None, level_db=float(rng.uniform(*settings.background_level_db)))
    if pool.backgrounds and rng.random() < settings.background_prob:
        label = _choice(rng, sorted(pool.backgrounds))
        rec = _choice(rng, pool.backgrounds[label])
        room = max(1, round(rec.duration * sr) - n)
        background = BackgroundPlan(label, rec.recording_id, int(rng.integers(room)), background.level_db)
    labels = [lab for lab in sorted(pool.events) if lab != background.label]
    if not labels:
        raise AcalignError(f"split {split}: no event class has recordings")
    probs = np.asarray(settings.event_count_probs, dtype=float)
    count = min(int(rng.choice(len(probs), p=probs / probs.sum())) + 1, len(labels))
    chosen = [labels[i] for i in rng.choice(len(labels), size=count, replace=False)]
    if rng.random() < settings.repeat_class_prob and count < len(probs):
        chosen.append(chosen[0])  # the same class twice: its phrase covers both segments
    events = []
    for k, label in enumerate(chosen):
        event = _plan_event(settings, classes[label], pool, rng)
        if k > 0 and rng.random() < settings.overlap_prob:
            event.overlap = int(rng.integers(k))
        events.append(event)
    return ClipPlan(f"{split}_{index:05d}.wav", split, int(rng.integers(2**31)), background, events)


def _plan_event(settings: PlanSettings, sound_class: SoundClass, pool: SplitPool, rng: np.random.Generator) -> EventPlan:
    sr = settings.sample_rate
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
            if offset >= settings.max_event_seconds * sr:
                break
    elif rec.duration > settings.max_event_seconds or (
        sound_class.speech is None and rec.duration > settings.excerpt_seconds[1]
    ):
        high = min(settings.excerpt_seconds[1], settings.max_event_seconds)
        excerpt = round(rng.uniform(settings.excerpt_seconds[0], high) * sr)
        start = int(rng.integers(max(1, length - excerpt)))
        pieces = [Piece(rec.recording_id, start, excerpt, 0, fade=True)]
    else:
        pieces = [Piece(rec.recording_id, 0, length, 0)]
    distant = bool(rng.random() < settings.distant_prob)
    snr = rng.uniform(*(settings.distant_snr_db if distant else settings.snr_db))
    return EventPlan(sound_class.name, pieces, float(rng.random()), float(snr), distant)


def _choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]
