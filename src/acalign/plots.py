"""Figures of an evaluation: activation gallery, frame–word similarity, P/R/F1 curves, training.

Figures are drawn on matplotlib's Agg canvas through :class:`matplotlib.figure.Figure`, never
``pyplot``: no display, no global figure state, safe in worker threads. Every file is written
through a temporary file and a rename, and the file names are stable (``gallery_00.png``,
``similarity_00.png``, ``prf_threshold.png``, ``training_curves.png``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from acalign.config import atomic_output
from acalign.errors import AcalignError

DPI = 110
ACTIVATION_COLOUR = "tab:blue"
THRESHOLD_COLOUR = "tab:red"


@dataclass
class GalleryPhrase:
    """One phrase under a gallery clip.

    Attributes:
        text: the phrase as written in the caption.
        activation: ``(T,)`` frame activation of the phrase.
        segments: ground-truth ``(onset, offset)`` events in seconds.
        annotated: ``False`` for a ``[[0, 0]]`` phrase (drawn without ground truth).
    """

    text: str
    activation: np.ndarray
    segments: Sequence[tuple[float, float]] = ()
    annotated: bool = True


@dataclass
class GalleryClip:
    """A clip of the gallery: its log-mel features and the phrases of one of its captions.

    Attributes:
        title: shown above the spectrogram (audio id and caption).
        features: ``(T, n_mels)`` log-mel energies.
        phrases: the phrases drawn under the spectrogram.
    """

    title: str
    features: np.ndarray
    phrases: list[GalleryPhrase] = field(default_factory=list)


def plot_gallery(
    clips: Sequence[GalleryClip],
    *,
    out_dir: str | os.PathLike,
    frame_rate: float,
    threshold: float | None = None,
) -> list[Path]:
    """Draw one figure per clip: the log-mel spectrogram with every phrase's ground truth shaded,
    and under it one panel per phrase with its activation against time in seconds.

    Args:
        clips: the clips to draw, in order.
        out_dir: folder for ``gallery_00.png``, ``gallery_01.png``, ...
        frame_rate: frames per second of features and activations.
        threshold: the event threshold, drawn as a dashed line (omitted when ``None``).

    Returns:
        The written paths, in the order of ``clips``.
    """
    out_dir = Path(out_dir)
    return [
        save_figure(_gallery_figure(clip, frame_rate=frame_rate, threshold=threshold), out_dir / f"gallery_{i:02d}.png")
        for i, clip in enumerate(clips)
    ]


def _gallery_figure(clip: GalleryClip, *, frame_rate: float, threshold: float | None) -> Figure:
    features = np.asarray(clip.features, dtype=np.float64)
    if features.ndim != 2:
        raise AcalignError(f"gallery clip {clip.title!r}: features must be (T, n_mels), got shape {features.shape}")
    n_rows = 1 + len(clip.phrases)
    fig = Figure(figsize=(9, 2.4 + 1.3 * len(clip.phrases)), dpi=DPI, layout="constrained")
    axes = fig.subplots(n_rows, 1, sharex=True, squeeze=False, height_ratios=[2.2] + [1] * len(clip.phrases))[:, 0]
    duration = features.shape[0] / frame_rate
    spec_ax = axes[0]
    spec_ax.imshow(
        features.T, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, features.shape[1])
    )
    spec_ax.set_ylabel("mel band")
    spec_ax.set_title(clip.title, fontsize=9, loc="left")
    for i, phrase in enumerate(clip.phrases):
        for onset, offset in _events(phrase):
            spec_ax.axvspan(onset, offset, color=_phrase_colour(i), alpha=0.3, lw=0)
    for i, (ax, phrase) in enumerate(zip(axes[1:], clip.phrases, strict=True)):
        _draw_activation(ax, phrase, frame_rate=frame_rate, threshold=threshold, colour=_phrase_colour(i))
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, duration)
    return fig


def _phrase_colour(index: int) -> str:
    # Skip blue and red: they draw the activation and the threshold.
    palette = ("tab:green", "tab:orange", "tab:purple", "tab:olive", "tab:cyan", "tab:brown", "tab:pink")
    return palette[index % len(palette)]


def _draw_activation(
    ax: object, phrase: GalleryPhrase, *, frame_rate: float, threshold: float | None, colour: str
) -> None:
    activation = np.asarray(phrase.activation, dtype=np.float64)
    times = np.arange(len(activation)) / frame_rate
    for onset, offset in _events(phrase):
        ax.axvspan(onset, offset, color=colour, alpha=0.3, lw=0)
    ax.plot(times, activation, color=ACTIVATION_COLOUR, lw=1.2)
    if threshold is not None:
        ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1)
    label = phrase.text if phrase.annotated else f"{phrase.text} (not annotated)"
    ax.set_ylabel("activation", fontsize=8)
    ax.set_title(label, fontsize=8, loc="left")
    # Scale to the activation (clamped cosines of a trained model are often well below 1),
    # keeping 0 and the threshold in view.
    values = [0.0, *([threshold] if threshold is not None else []), *activation.tolist()]
    low, high = min(values), max(values)
    ax.set_ylim(low, high + 0.1 * (high - low) if high > low else low + 1.0)


def _events(phrase: GalleryPhrase) -> Sequence[tuple[float, float]]:
    return phrase.segments if phrase.annotated else ()


def plot_similarity_matrix(
    similarity: np.ndarray,
    words: Sequence[str],
    *,
    frame_rate: float,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Draw a frame–word similarity matrix: time in seconds on x, the caption's words on y.

    Args:
        similarity: ``(T, W)`` similarities of one clip and one caption.
        words: the ``W`` words, top to bottom in caption order.
        frame_rate: frames per second.
        path: output PNG.
        title: figure title.

    Returns:
        ``path`` as a Path.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[1] != len(words):
        raise AcalignError(
            f"similarity must be (T, W) with W = {len(words)} words, got shape {similarity.shape}"
        )
    fig = Figure(figsize=(9, 1.2 + 0.28 * len(words)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    duration = similarity.shape[0] / frame_rate
    image = ax.imshow(
        similarity.T,
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
        extent=(0, duration, len(words) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(words)), labels=list(words), fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9, loc="left")
    fig.colorbar(image, ax=ax, label="similarity", pad=0.01)
    return save_figure(fig, Path(path))


def plot_prf_threshold(curves: dict[str, dict[str, np.ndarray]], *, path: str | os.PathLike) -> Path:
    """Draw the reference's frame-level precision, recall and F1 against the threshold.

    Args:
        curves: system name → ``{"thresholds", "precision", "recall", "f1"}`` arrays of one
            length (as :func:`acalign.metrics.frame_prf_curve` returns). The first system is drawn
            solid, the others dashed.
        path: output PNG.

    Returns:
        ``path`` as a Path.
    """
    fig = Figure(figsize=(7, 4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    colours = {"precision": "tab:blue", "recall": "tab:orange", "f1": "tab:green"}
    for i, (name, curve) in enumerate(curves.items()):
        style = "-" if i == 0 else "--"
        for key, colour in colours.items():
            ax.plot(curve["thresholds"], curve[key], style, color=colour, label=f"{name} {key}", lw=1.4)
    ax.set_xlabel("threshold on min–max normalised activation")
    ax.set_ylabel("frame-level score")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    return save_figure(fig, Path(path))


def find_training_logs(run_dir: str | os.PathLike) -> list[Path]:
    """Lightning ``metrics.csv`` files under ``run_dir`` (any depth), sorted by path."""
    return sorted(Path(run_dir).rglob("metrics.csv"))


def read_training_log(paths: Sequence[str | os.PathLike]) -> dict[str, dict[int, float]]:
    """Read Lightning CSV logs into column → {epoch: value} (the last value logged in an epoch).

    Several files (a resumed run writes a new version folder) are read in order, later ones
    overriding earlier epochs. Non-numeric and empty cells are skipped.
    """
    series: dict[str, dict[int, float]] = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                epoch = _number(row.get("epoch"))
                if epoch is None:
                    continue
                for column, cell in row.items():
                    value = _number(cell)
                    if column in ("epoch", "step") or value is None:
                        continue
                    series.setdefault(column, {})[int(epoch)] = value
    return series


def plot_training_curves(run_dir: str | os.PathLike, *, path: str | os.PathLike) -> Path | None:
    """Draw losses (left) and other logged validation metrics (right) against the epoch.

    Reads every ``metrics.csv`` under ``run_dir`` (Lightning's ``CSVLogger``).

    Returns:
        ``path``, or ``None`` when the run has no training log.
    """
    logs = find_training_logs(run_dir)
    series = read_training_log(logs) if logs else {}
    if not series:
        return None
    losses = {name: values for name, values in series.items() if "loss" in name}
    others = {
        name: values for name, values in series.items() if "loss" not in name and name.startswith("val")
    }
    fig = Figure(figsize=(10 if others else 6, 4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2 if others else 1, squeeze=False)[0]
    _plot_series(axes[0], losses, ylabel="loss")
    if others:
        _plot_series(axes[1], others, ylabel="validation metric")
    return save_figure(fig, Path(path))


def _plot_series(ax: object, series: dict[str, dict[int, float]], *, ylabel: str) -> None:
    for name, values in sorted(series.items()):
        epochs = sorted(values)
        ax.plot(epochs, [values[e] for e in epochs], marker="o", ms=3, lw=1.2, label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)


def _number(cell: str | None) -> float | None:
    try:
        value = float(cell) if cell not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG through a temporary file and a rename."""
    with atomic_output(path, binary=True) as handle:
        fig.savefig(handle, format="png")
    return path
