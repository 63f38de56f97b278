"""Figures: stable file names, real PNGs, training logs read from Lightning's CSV."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from acalign.errors import AcalignError
from acalign.plots import (
    GalleryClip,
    GalleryPhrase,
    plot_gallery,
    plot_prf_threshold,
    plot_similarity_matrix,
    plot_training_curves,
    read_training_log,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_gallery_writes_one_png_per_clip(tmp_path, rng):
    clips = [
        GalleryClip(
            f"clip {i}",
            rng.normal(size=(50, 16)),
            [
                GalleryPhrase("a dog barks", rng.random(50), [(0.5, 1.5)]),
                GalleryPhrase("wind", rng.random(50), [(0.0, 0.0)], annotated=False),
            ],
        )
        for i in range(2)
    ]
    paths = plot_gallery(clips, out_dir=tmp_path / "plots", frame_rate=25.0, threshold=0.4)
    assert paths == [tmp_path / "plots" / "gallery_00.png", tmp_path / "plots" / "gallery_01.png"]
    assert all(_is_png(p) for p in paths)
    assert not list((tmp_path / "plots").glob("*.tmp"))  # temporary files renamed away


def test_gallery_rejects_1d_features(tmp_path):
    with pytest.raises(AcalignError, match=r"\(T, n_mels\)"):
        plot_gallery([GalleryClip("bad", np.zeros(10))], out_dir=tmp_path, frame_rate=10.0)


def test_similarity_matrix(tmp_path, rng):
    path = plot_similarity_matrix(
        rng.random((40, 3)), ["a", "dog", "barks"], frame_rate=10.0, path=tmp_path / "similarity_00.png"
    )
    assert _is_png(path)


def test_similarity_matrix_needs_one_word_per_column(tmp_path):
    with pytest.raises(AcalignError, match="3 words"):
        plot_similarity_matrix(np.zeros((40, 2)), ["a", "b", "c"], frame_rate=10.0, path=tmp_path / "s.png")


def test_prf_threshold(tmp_path):
    thresholds = np.linspace(0.01, 0.99, 99)
    curve = {"thresholds": thresholds, "precision": thresholds, "recall": 1 - thresholds, "f1": thresholds * 0.5}
    path = plot_prf_threshold({"model": curve, "random": curve}, path=tmp_path / "prf_threshold.png")
    assert _is_png(path)


CSV_LOG = """epoch,step,train_loss,val_loss,val_t2a_r1,lr-Adam
0,9,1.0,,,0.001
0,9,,0.9,0.10,
1,19,0.8,,,0.001
1,19,,0.7,0.20,
"""


def test_read_training_log_keeps_one_value_per_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV_LOG)
    series = read_training_log([path])
    assert series["train_loss"] == {0: 1.0, 1: 0.8}
    assert series["val_loss"] == {0: 0.9, 1: 0.7}
    assert series["val_t2a_r1"] == {0: 0.1, 1: 0.2}
    assert "step" not in series


def test_training_curves_from_a_nested_lightning_log(tmp_path):
    log_dir = tmp_path / "run" / "logs" / "lightning_logs" / "version_0"
    log_dir.mkdir(parents=True)
    (log_dir / "metrics.csv").write_text(CSV_LOG)
    path = plot_training_curves(tmp_path / "run", path=tmp_path / "run" / "plots" / "training_curves.png")
    assert path == tmp_path / "run" / "plots" / "training_curves.png"
    assert _is_png(path)


def test_training_curves_without_log_is_none(tmp_path):
    assert plot_training_curves(tmp_path, path=tmp_path / "training_curves.png") is None
    assert not (tmp_path / "training_curves.png").exists()


def _tiny_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    return fig


def test_saved_figures_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_figure(_tiny_figure(), tmp_path / "f.png")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_directory_as_figure_path_is_a_one_line_error_leaving_nothing(tmp_path):
    target = tmp_path / "plots.png"
    target.mkdir()
    with pytest.raises(AcalignError, match="plots.png: is a directory"):
        save_figure(_tiny_figure(), target)
    assert list(tmp_path.iterdir()) == [target] and not any(target.iterdir())


def test_a_file_in_the_way_of_the_output_folder_is_named(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(AcalignError, match=r"out: exists and is not a directory"):
        save_figure(_tiny_figure(), tmp_path / "out" / "sub" / "f.png")
