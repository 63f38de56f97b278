"""What a built corpus holds: statistics, the catalogue of recordings used, and attribution."""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from acalign.config import atomic_write_text
from acalign.data.manifest import Manifest

from .sources import CATALOGUE_FIELDS, Recording
from .splits import SPLITS
from .taxonomy import SoundClass


def _uses(metas: dict[str, list[dict[str, Any]]]) -> Counter:
    """How many clips use each recording (as event piece or background)."""
    uses: Counter = Counter()
    for split_metas in metas.values():
        for meta in split_metas:
            used = {r for e in meta["events"] for r in e["recordings"]}
            if meta["background"]["recording"]:
                used.add(meta["background"]["recording"])
            uses.update(used)
    return uses


def corpus_stats(
    manifests: dict[str, Manifest],
    metas: dict[str, list[dict[str, Any]]],
    recordings: Sequence[Recording],
    split_of: dict[str, str],
    classes: dict[str, SoundClass],
    clip_seconds: float,
    dropped: Sequence[str] = (),
) -> dict[str, Any]:
    """Per-split and per-class statistics of a built corpus (JSON-ready, deterministic)."""
    splits: dict[str, Any] = {}
    per_class: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"recordings": {s: 0 for s in SPLITS}, "families": {s: 0 for s in SPLITS},
                 "events": {s: 0 for s in SPLITS}, "backgrounds": {s: 0 for s in SPLITS},
                 "event_seconds": 0.0}
    )
    families_seen: set[tuple[str, str]] = set()
    for rec in recordings:
        entry = per_class[rec.label]
        entry["role"] = classes[rec.label].role
        split = split_of[rec.family]
        entry["recordings"][split] += 1
        if (rec.label, rec.family) not in families_seen:
            families_seen.add((rec.label, rec.family))
            entry["families"][split] += 1
    sources: dict[str, dict[str, Any]] = {
        s: {"classes": set(), "recordings": 0, "families": set(), "packages": set(), "seconds": 0.0} for s in SPLITS
    }
    for rec in recordings:
        entry = sources[split_of[rec.family]]
        entry["classes"].add(rec.label)
        entry["recordings"] += 1
        entry["families"].add(rec.family)
        entry["packages"].add(rec.package)
        entry["seconds"] += rec.duration
    for split, manifest in manifests.items():
        n_events = [len(m["events"]) for m in metas[split]]
        durations = [e["offset"] - e["onset"] for m in metas[split] for e in m["events"]]
        coverage = [_covered(m["events"]) / clip_seconds for m in metas[split]]
        tokens = [len(c.tokens) for _, c in manifest.captions()]
        mentioned = sum(
            1 for _, c in manifest.captions() for p in c.phrases
            if len(p.segments) == 1 and p.segments[0].onset == 0 and p.segments[0].offset == clip_seconds
            and p.segments[0].duration > 0
        )
        for meta in metas[split]:
            for event in meta["events"]:
                per_class[event["label"]]["events"][split] += 1
                per_class[event["label"]]["event_seconds"] += event["offset"] - event["onset"]
            if meta["background"]["label"]:
                per_class[meta["background"]["label"]]["backgrounds"][split] += 1
        splits[split] = {
            "clips": len(manifest),
            "captions": manifest.n_captions,
            "phrases": manifest.n_phrases,
            "events": sum(n_events),
            "events_per_clip": dict(sorted(Counter(n_events).items())),
            "mean_event_seconds": _mean(durations),
            "min_event_seconds": round(min(durations), 3) if durations else 0.0,
            "max_event_seconds": round(max(durations), 3) if durations else 0.0,
            "mean_event_coverage": _mean(coverage),
            "clips_with_real_background": sum(1 for m in metas[split] if m["background"]["label"]),
            "background_phrases": mentioned,
            "mean_caption_tokens": _mean(tokens),
            "vocabulary": len({t for _, c in manifest.captions() for t in c.tokens}),
            "hours": round(len(manifest) * clip_seconds / 3600, 3),
            "classes_heard": len({e["label"] for m in metas[split] for e in m["events"]}
                                 | {m["background"]["label"] for m in metas[split] if m["background"]["label"]}),
            "source_classes": len(sources[split]["classes"]),
            "source_recordings": sources[split]["recordings"],
            "source_families": len(sources[split]["families"]),
            "source_packages": sorted(sources[split]["packages"]),
            "source_hours": round(sources[split]["seconds"] / 3600, 3),
        }
    for entry in per_class.values():
        total = sum(entry["events"].values())
        entry["mean_event_seconds"] = round(entry.pop("event_seconds") / total, 3) if total else 0.0
    return {
        "splits": splits,
        "classes": dict(sorted(per_class.items())),
        "n_classes": len(per_class),
        "n_recordings": len(recordings),
        "n_families": len({r.family for r in recordings}),
        "n_packages": len({r.package for r in recordings}),
        "source_seconds": round(sum(r.duration for r in recordings), 1),
        "source_hours": round(sum(r.duration for r in recordings) / 3600, 3),
        "classes_left_out": list(dropped),
    }


def _covered(events: Sequence[dict[str, Any]]) -> float:
    total, end = 0.0, -1.0
    for on, off in sorted((e["onset"], e["offset"]) for e in events):
        if off > end:
            total += off - max(on, end)
            end = off
    return total


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def format_summary(stats: dict[str, Any]) -> str:
    """A plain-text table of the classes and splits of ``stats`` (as :func:`corpus_stats`)."""
    lines = [
        f"{'class':<20} {'role':<10} {'recs':>5} {'fam tr/va/te/un':>18} {'uses tr/va/te/un':>22} {'mean s':>7}"
    ]
    for name, entry in stats["classes"].items():
        fam = "/".join(str(entry["families"][s]) for s in SPLITS)
        events = "/".join(str(entry["events"][s] + entry["backgrounds"][s]) for s in SPLITS)
        recs = sum(entry["recordings"].values())
        lines.append(
            f"{name:<20} {entry['role']:<10} {recs:>5} {fam:>18} {events:>22} {entry['mean_event_seconds']:>7.2f}"
        )
    lines.append("")
    lines.append(
        f"{'split':<11} {'clips':>6} {'captions':>9} {'phrases':>8} {'events':>7} {'classes':>7} "
        f"{'recordings':>10} {'families':>8} {'src h':>6} {'coverage':>8} {'tokens':>7} {'hours':>6}"
    )
    for split, s in stats["splits"].items():
        lines.append(
            f"{split:<11} {s['clips']:>6} {s['captions']:>9} {s['phrases']:>8} {s['events']:>7} "
            f"{s['source_classes']:>7} {s['source_recordings']:>10} {s['source_families']:>8} "
            f"{s['source_hours']:>6.2f} {s['mean_event_coverage']:>8.2f} {s['mean_caption_tokens']:>7.1f} {s['hours']:>6.2f}"
        )
    lines.append(
        f"{stats['n_classes']} classes, {stats['n_recordings']} recordings "
        f"({stats['source_seconds'] / 60:.1f} min of source audio)"
    )
    if stats["classes_left_out"]:
        lines.append(f"left out (too few recordings): {', '.join(stats['classes_left_out'])}")
    return "\n".join(lines)


def write_used_catalogue(
    recordings: Sequence[Recording], split_of: dict[str, str], metas: dict[str, list[dict[str, Any]]], path: Path
) -> None:
    """Write the corpus catalogue: every recording, its split and how many clips use it."""
    uses = _uses(metas)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CATALOGUE_FIELDS, "split", "uses"], lineterminator="\n")
    writer.writeheader()
    for rec in recordings:
        row = asdict(rec)
        row["file"] = Path(rec.file).name  # the cache path is machine-specific
        writer.writerow({**row, "split": split_of[rec.family], "uses": uses.get(rec.recording_id, 0)})
    atomic_write_text(path, buffer.getvalue())


def write_attribution(
    recordings: Sequence[Recording], metas: dict[str, list[dict[str, Any]]], out: Path, cache: Path
) -> None:
    """Write ``SOURCES.md`` (package, version, licence and path of every recording used) and
    copy each package's copyright file to ``licences/``."""
    uses = _uses(metas)
    used = [r for r in recordings if uses.get(r.recording_id)]
    by_package: dict[str, list[Recording]] = defaultdict(list)
    for rec in used:
        by_package[rec.package].append(rec)
    lines = [
        "# Sources of this corpus",
        "",
        "Every clip mixes real recordings shipped by the Debian packages below (or speech",
        "synthesised with espeak-ng, or a user's own library). Their authors keep their rights;",
        "the licences below apply to the clips made from them (CC-BY-SA and GPL require that",
        "derived works keep this attribution). Each package's full copyright file is in",
        "`licences/`. `events/{split}.json` names the recordings used by every clip.",
        "",
    ]
    for package in sorted(by_package):
        recs = by_package[package]
        versions = sorted({r.version for r in recs})
        licences = sorted({r.licence for r in recs})
        copyright_file = cache / "audio" / package / "copyright"
        if copyright_file.is_file():
            (out / "licences").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copyright_file, out / "licences" / f"{package}.copyright")
        lines += [
            f"## {package} {', '.join(versions)}",
            "",
            f"Licence: {'; '.join(licences)}. {len(recs)} recordings used.",
            "",
            "| path in package | class | clips |",
            "| --- | --- | --- |",
        ]
        lines += [f"| `{r.path}` | {r.label} | {uses[r.recording_id]} |" for r in recs]
        lines.append("")
    atomic_write_text(out / "SOURCES.md", "\n".join(lines))
