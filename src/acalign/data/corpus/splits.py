"""Which split each recording goes to: duplicates merged, whole packages held out, families split.

* Copies of one recording in several packages (:mod:`acalign.data.corpus.dedup`) are one
  recording: the copy from a package that is not held out is kept, the others dropped.
* ``test_unseen`` takes every recording of the held-out packages (sources never seen in
  training), for the classes that training also has.
* The rest is split by recording family into train, val and test (:func:`assign_splits`), so
  numbered variants of one recording never cross splits.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .sources import Recording

SPLITS = ("train", "val", "test", "test_unseen")
SEEN_SPLITS = SPLITS[:3]


@dataclass
class Deduplicated:
    """Recordings left after dropping copies, and what was dropped (``copy id → kept id``)."""

    recordings: list[Recording]
    dropped: dict[str, str] = field(default_factory=dict)


def drop_duplicates(
    recordings: Sequence[Recording], groups: Sequence[Sequence[int]], *, held_out: Sequence[str] = ()
) -> Deduplicated:
    """Keep one recording of each duplicate group.

    Parameters
    ----------
    recordings : sequence of Recording
        All recordings, in the order the groups index.
    groups : sequence of sequence of int
        Indices of recordings that are copies of each other
        (:func:`acalign.data.corpus.dedup.duplicate_groups`).
    held_out : sequence of str
        Packages of the ``test_unseen`` split: a copy from another package is preferred, so that
        no recording of a held-out package also feeds training.

    Returns
    -------
    Deduplicated
        The kept recordings (input order) and, for each dropped copy, the one kept instead.
    """
    held = set(held_out)
    drop: dict[int, int] = {}
    for group in groups:
        keep = min(group, key=lambda i: (recordings[i].package in held, recordings[i].recording_id))
        for i in group:
            if i != keep:
                drop[i] = keep
    kept = [rec for i, rec in enumerate(recordings) if i not in drop]
    return Deduplicated(kept, {recordings[i].recording_id: recordings[k].recording_id for i, k in drop.items()})


def unseen_split(recordings: Sequence[Recording], held_out: Sequence[str]) -> tuple[list[Recording], list[Recording]]:
    """Split off the recordings of held-out packages: ``(seen, unseen)``.

    Unseen recordings of a class that no seen recording has are left out of both (the split
    measures new sources of known sounds, not new sounds).
    """
    held = set(held_out)
    seen = [r for r in recordings if r.package not in held]
    known = {r.label for r in seen}
    unseen = [r for r in recordings if r.package in held and r.label in known]
    return seen, unseen


def assign_splits(
    recordings: Sequence[Recording], *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.15
) -> dict[str, str]:
    """Assign every recording family to one of train, val and test; return family → split.

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
        counts = {s: 0 for s in SEEN_SPLITS}
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
                split = max(SEEN_SPLITS, key=lambda s: targets[s] * total - counts[s])
            assignment[fam] = split
            counts[split] += sizes[fam]
    return assignment


def _has_family(sizes: dict[str, int], assignment: dict[str, str], split: str) -> bool:
    return any(assignment.get(f) == split for f in sizes)


def family_splits(
    seen: Sequence[Recording], unseen: Sequence[Recording], *, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, str]:
    """Family → split for every recording: seen families by :func:`assign_splits`, the families
    of held-out packages to ``test_unseen`` (family names start with their package, so the two
    never share one)."""
    out = assign_splits(seen, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    out.update({r.family: "test_unseen" for r in unseen})
    return out
