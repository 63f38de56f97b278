"""Contact sheets for checking labels by eye: every recording of a class as a log-mel thumbnail.

``acalign corpus audit`` draws one PNG per class (more pages for large classes) from the
prepared recordings (decoded, trimmed, peak-normalised), each thumbnail titled with its package,
file name and audible length, so that a person can see at a glance which recordings do not belong
(a tone among barks, silence, music). ``audit/index.md`` lists the sheets with their counts.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from acalign.config import atomic_write_text

from .mixing import MixConfig, prepared_path
from .sources import Recording

COLUMNS = 6
ROWS = 8
THUMB_SECONDS = 4.0
SHEET_DPI = 80


def _thumbnail(rec: Recording, cache: Path, mix: MixConfig) -> np.ndarray:
    """``(n_mels, frames)`` log-mel in dB of the first seconds of a prepared recording."""
    from acalign.data.features import FeatureConfig, log_mel

    audio = np.load(prepared_path(rec, cache, mix.sample_rate, mix.threshold_db), mmap_mode="r")
    clip = np.asarray(audio[: int(THUMB_SECONDS * mix.sample_rate)], dtype=np.float32)
    if clip.size < 2048:
        clip = np.pad(clip, (0, 2048 - clip.size))
    feats = log_mel(clip, FeatureConfig(sample_rate=mix.sample_rate))  # (frames, n_mels), natural log
    return (10 / math.log(10)) * feats.T


def _title(rec: Recording) -> str:
    path = rec.path.split(" (")[0]
    name = path.split("#", 1)[1] if "#" in path else PurePosixPath(path).name  # rendered: preset/phrase
    name = name if len(name) <= 26 else f"{name[:12]}…{name[-13:]}"
    return f"{rec.package.removesuffix('-data')[:14]}\n{name} ({rec.duration:.1f} s)"


def write_sheet(recordings: Sequence[Recording], cache: Path, mix: MixConfig, path: Path, *, title: str) -> None:
    """Draw one contact sheet of up to ``COLUMNS × ROWS`` recordings to the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from acalign.plots import save_figure

    rows = max(1, math.ceil(len(recordings) / COLUMNS))
    fig, axes = plt.subplots(
        rows, COLUMNS, figsize=(COLUMNS * 2.4, rows * 1.55 + 0.5), squeeze=False, dpi=SHEET_DPI
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, rec in zip(axes.flat, recordings, strict=False):
        image = _thumbnail(rec, cache, mix)
        peak = float(image.max())
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=peak - 80, vmax=peak,
                  extent=(0, image.shape[1] / 50, 0, image.shape[0]))
        ax.set_title(_title(rec), fontsize=6.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, path)
    plt.close(fig)


def write_audit_sheets(
    recordings: Sequence[Recording],
    split_of: dict[str, str] | None,
    cache: Path,
    mix: MixConfig,
    out: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    progress: Callable[[Iterable], Iterable] = iter,
) -> list[Path]:
    """Write ``out/{class}.png`` (``{class}-2.png``, ... for large classes) and ``out/index.md``.

    Parameters
    ----------
    recordings : sequence of Recording
        Prepared recordings (their ``duration`` set).
    split_of : dict or None
        Family → split, shown in the index (``None``: not shown).
    cache, mix : Path, MixConfig
        Where the prepared recordings are and at which rate.
    out : path
        The audit folder (created).
    classes : sequence of str, optional
        Only these classes (default: all).

    Returns
    -------
    list of Path
        The sheets written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_class: dict[str, list[Recording]] = defaultdict(list)
    for rec in sorted(recordings, key=lambda r: (r.package, r.path)):
        if classes is None or rec.label in classes:
            by_class[rec.label].append(rec)
    per_sheet = COLUMNS * ROWS
    jobs = [
        (label, page, recs[start : start + per_sheet])
        for label, recs in sorted(by_class.items())
        for page, start in enumerate(range(0, len(recs), per_sheet), start=1)
    ]
    written, lines = [], ["# Audit sheets", "", "| class | recordings | families | packages | splits | sheets |",
                          "| --- | --- | --- | --- | --- | --- |"]
    for label, page, recs in progress(jobs):
        pages = math.ceil(len(by_class[label]) / per_sheet)
        path = out / (f"{label}.png" if page == 1 else f"{label}-{page}.png")
        write_sheet(recs, cache, mix, path, title=f"{label} — page {page} of {pages}")
        written.append(path)
    for label, recs in sorted(by_class.items()):
        families = {r.family for r in recs}
        packages = sorted({r.package for r in recs})
        splits = sorted({split_of[r.family] for r in recs if r.family in split_of}) if split_of else []
        pages = math.ceil(len(recs) / per_sheet)
        sheets = ", ".join(f"[{p}]({label}{'' if p == 1 else f'-{p}'}.png)" for p in range(1, pages + 1))
        lines.append(f"| {label} | {len(recs)} | {len(families)} | {', '.join(packages)} | {', '.join(splits)} | {sheets} |")
    atomic_write_text(out / "index.md", "\n".join(lines) + "\n")
    return written
