"""Evaluate a trained run on a split: every metric, the random floor, metrics.json and report.md.

:func:`evaluate_run` does the model side — embed every clip and caption of the split once, the
clip–caption similarity matrix, one activation per (clip, phrase) pair — and hands plain arrays to
:func:`evaluate_scores`, which computes every metric (:mod:`acalign.metrics`). The random
baseline goes through the same :func:`evaluate_scores` with uniform-random arrays of the same
shapes. The event threshold and median filter are chosen on the validation split, never on the
split being reported, and stored in ``RUN_DIR/model/inference.json`` for grounding.

Outputs in ``RUN_DIR``: ``metrics.json`` (nested: ``{"retrieval": {"text_to_audio": {...}}}``),
``report.md`` and ``plots/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from acalign.config import atomic_write_json, atomic_write_text
from acalign.errors import AcalignError, DataError, ModelError
from acalign.metrics import (
    EVENT_COLLAR_S,
    EVENT_OFFSET_COLLAR_RATE,
    PAPER_CANDIDATES,
    PAPER_REPEATS,
    PSDS_SETTINGS,
    PhraseActivation,
    choose_event_threshold,
    frame_prf_curve,
    paper_protocol,
    random_scores,
    retrieval_metrics,
    sed_metrics,
    split_annotated,
)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


# =========================================================================== scoring a split


@dataclass
class SplitScores:
    """What a model (or the random scorer) says about one split, as plain arrays.

    Attributes:
        audio_ids: the ``n_audio`` clips, in manifest order.
        caption_to_audio: ``(n_captions,)`` clip index of each caption.
        similarity: ``(n_audio, n_captions)`` clip–caption scores (``None`` when not needed).
        pairs: one :class:`~acalign.metrics.PhraseActivation` per (clip, caption, phrase).
        frame_rate: frames per second of the activations.
        frame_word: ``(T, W)`` similarity matrices kept for plotting, keyed by caption index.
    """

    audio_ids: list[str]
    caption_to_audio: np.ndarray
    similarity: np.ndarray | None
    pairs: list[PhraseActivation]
    frame_rate: float
    frame_word: dict[int, np.ndarray] = field(default_factory=dict)


def pair_id(audio_id: str, caption_id: str, phrase_index: int) -> str:
    """The file id of a (clip, caption, phrase) pair in the SED metrics."""
    return f"{audio_id}|{caption_id}|{phrase_index}"


def score_split(
    aligner: Any,
    manifest: Any,
    store: Any,
    *,
    batch_size: int = 32,
    with_similarity: bool = True,
    phrase_reduction: str = "mean",
    keep_frame_word: Sequence[int] = (),
) -> SplitScores:
    """Embed every clip and caption of a split once and score them.

    Memory stays bounded by one batch of clips: captions are embedded once (``(n_captions, W, D)``),
    clips ``batch_size`` at a time, and each clip batch's embeddings are dropped after its rows of
    the similarity matrix and its phrases' activations are computed.

    Args:
        aligner: an :class:`acalign.models.aligner.Aligner` (eval mode).
        manifest: the split's :class:`acalign.data.manifest.Manifest`.
        store: the split's :class:`acalign.data.features.FeatureStore`.
        batch_size: clips (and captions) per forward pass.
        with_similarity: compute the ``(n_audio, n_captions)`` matrix (not needed on validation).
        phrase_reduction: ``"mean"`` or ``"max"`` over a phrase's words (Aligner.phrase_activation).
        keep_frame_word: caption indices whose ``(T, W)`` frame–word matrix is kept for plots.

    Returns:
        :class:`SplitScores`.
    """
    import torch

    from acalign.data.dataset import pad_features

    if batch_size < 1:
        raise AcalignError(f"batch_size must be at least 1, got {batch_size}")
    captions = list(manifest.captions())
    if not captions:
        raise DataError(f"{manifest.source}: the split has no caption to evaluate")
    clip_index = {clip.audio_id: i for i, clip in enumerate(manifest.clips)}
    caption_to_audio = np.array([clip_index[clip.audio_id] for clip, _ in captions], dtype=np.int64)
    caption_rows = _caption_rows(caption_to_audio, len(manifest.clips))
    keep = set(keep_frame_word)
    with torch.no_grad():
        q, q_mask = _embed_captions(aligner, [caption.tokens for _, caption in captions], batch_size=batch_size)
        similarity = np.empty((len(manifest.clips), len(captions)), dtype=np.float64) if with_similarity else None
        pairs: list[PhraseActivation] = []
        frame_word: dict[int, np.ndarray] = {}
        for start in range(0, len(manifest.clips), batch_size):
            batch_clips = manifest.clips[start : start + batch_size]
            feats = [torch.from_numpy(store[clip.audio_id]) for clip in batch_clips]
            padded, lengths, _ = pad_features(feats, pad_value=store.config.pad_value)
            a, a_mask = aligner.encode_audio(padded, lengths)
            if similarity is not None:
                rows = aligner.score_matrix(a, a_mask, q, q_mask)
                similarity[start : start + len(batch_clips)] = rows.double().cpu().numpy()
            for offset, clip in enumerate(batch_clips):
                n_frames = int(lengths[offset])
                audio = a[offset : offset + 1, :n_frames]
                for c in caption_rows[start + offset]:
                    caption = captions[c][1]
                    n_words = len(caption.tokens)
                    sim = aligner.frame_word_similarity(audio, q[c : c + 1, :n_words])[0]
                    if c in keep:
                        frame_word[c] = sim.double().cpu().numpy()
                    for k, phrase in enumerate(caption.phrases):
                        activation = aligner.phrase_activation(sim, phrase.span, phrase_reduction)
                        pairs.append(
                            PhraseActivation(
                                pair_id=pair_id(clip.audio_id, caption.caption_id, k),
                                activation=activation.double().cpu().numpy(),
                                segments=tuple((s.onset, s.offset) for s in phrase.events),
                                annotated=phrase.annotated,
                            )
                        )
    return SplitScores(
        audio_ids=[clip.audio_id for clip in manifest.clips],
        caption_to_audio=caption_to_audio,
        similarity=similarity,
        pairs=pairs,
        frame_rate=float(store.config.frame_rate),
        frame_word=frame_word,
    )


def _caption_rows(caption_to_audio: np.ndarray, n_audio: int) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(n_audio)]
    for c, a in enumerate(caption_to_audio):
        rows[int(a)].append(c)
    return rows


def _embed_captions(aligner: Any, tokens: list[list[str]], *, batch_size: int) -> tuple[Any, Any]:
    """Embed all captions in batches → ``(q (N, W_max, D), mask (N, W_max))``."""
    import torch

    embeddings, masks = [], []
    for start in range(0, len(tokens), batch_size):
        emb, mask = aligner.encode_text(tokens[start : start + batch_size])
        embeddings.append(emb)
        masks.append(mask)
    width = max(int(e.shape[1]) for e in embeddings)
    q = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, width - e.shape[1])) for e in embeddings])
    q_mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks])
    return q, q_mask


def random_split_scores(scores: SplitScores, *, seed: int) -> SplitScores:
    """The uniform-random scorer shaped like ``scores`` (same clips, captions, pairs, lengths)."""
    drawn = random_scores(
        n_audio=len(scores.audio_ids),
        n_captions=len(scores.caption_to_audio),
        n_frames=[len(p.activation) for p in scores.pairs],
        seed=seed,
    )
    pairs = [replace(p, activation=a) for p, a in zip(scores.pairs, drawn.activations, strict=True)]
    similarity = drawn.similarity if scores.similarity is not None else None
    return replace(scores, similarity=similarity, pairs=pairs, frame_word={})


# =========================================================================== metrics from arrays


def evaluate_scores(
    *,
    similarity: np.ndarray,
    caption_to_audio: np.ndarray,
    pairs: Sequence[PhraseActivation],
    frame_rate: float,
    threshold: float,
    median_filter_frames: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric from plain arrays (the model's or the random scorer's).

    Args:
        similarity: ``(n_audio, n_captions)`` clip–caption scores.
        caption_to_audio: ``(n_captions,)`` clip index of each caption.
        pairs: phrase activations with ground truth (unannotated ones are counted, not scored).
        frame_rate: frames per second of the activations.
        threshold: event threshold (chosen on validation).
        median_filter_frames: median filter length in frames (chosen on validation).
        seed: seed of the paper protocol's draws.

    Returns:
        ``{"retrieval": {"text_to_audio", "audio_to_text", "paper_protocol"}, "sed": {...},
        "counts": {...}}``.
    """
    retrieval: dict[str, Any] = retrieval_metrics(similarity, caption_to_audio=caption_to_audio)
    n_candidates = min(PAPER_CANDIDATES, similarity.shape[0])
    if n_candidates < PAPER_CANDIDATES:
        log.warning(
            "only %d clips: the paper protocol uses %d candidates instead of %d",
            similarity.shape[0], n_candidates, PAPER_CANDIDATES,
        )
    retrieval["paper_protocol"] = paper_protocol(
        similarity, caption_to_audio=caption_to_audio, n_candidates=n_candidates, n_repeats=PAPER_REPEATS, seed=seed
    )
    sed = sed_metrics(pairs, frame_rate=frame_rate, threshold=threshold, median_filter_frames=median_filter_frames)
    counts = {
        "clips": int(similarity.shape[0]),
        "captions": int(similarity.shape[1]),
        "phrases": len(pairs),
        "phrases_scored": sed.pop("phrases_scored"),
        "phrases_unannotated": sed.pop("phrases_unannotated"),
    }
    return {"retrieval": retrieval, "sed": sed, "counts": counts}


def choose_postprocessing(pairs: Sequence[PhraseActivation], *, frame_rate: float) -> dict[str, Any]:
    """Threshold and median filter maximising event F1 on (validation) ``pairs``."""
    chosen = choose_event_threshold(pairs, frame_rate=frame_rate)
    return {
        "threshold": chosen["threshold"],
        "median_filter_frames": chosen["median_filter_frames"],
        "val_event_f1": chosen["f1"],
    }


# =========================================================================== the whole run


def evaluate_run(
    run_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    split: str = "test",
    val_split: str | None = "val",
    batch_size: int = 32,
    seed: int = 0,
    gallery: int = 4,
    phrase_reduction: str = "mean",
) -> dict[str, Any]:
    """Evaluate ``RUN_DIR/model`` on ``DATA_DIR/{split}.json``; write metrics, report and plots.

    The event threshold and median filter are chosen on ``val_split`` (for the model and, with
    the same code, for the random scorer) and written to ``RUN_DIR/model/inference.json``. With
    ``val_split=None`` the model's stored ``inference.json`` values are used and kept.

    Args:
        run_dir: a training run folder holding ``model/`` (an exported model).
        data_dir: the data folder (``{split}.json``, ``features/{split}.h5``).
        split: the split reported.
        val_split: the split the threshold is chosen on, or ``None``.
        batch_size: clips/captions per forward pass.
        seed: seed of the random baseline and of the paper protocol's draws.
        gallery: number of clips of ``split`` drawn in ``plots/gallery_NN.png``.
        phrase_reduction: ``"mean"`` or ``"max"`` over a phrase's words.

    Returns:
        The dictionary written to ``RUN_DIR/metrics.json``.
    """
    from acalign.models.export import load_exported

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if split == val_split:
        raise AcalignError(f"the threshold must be chosen on another split than the one reported ({split!r})")
    aligner, meta = load_exported(run_dir / "model")
    manifest, store_path = _open_split(data_dir, split)
    gallery_captions = _first_caption_indices(manifest, gallery)
    test = _score_stored_split(
        aligner, meta, manifest, store_path, batch_size=batch_size, with_similarity=True,
        phrase_reduction=phrase_reduction, keep_frame_word=gallery_captions,
    )
    test_random = random_split_scores(test, seed=seed)
    if val_split is None:
        post = {
            "threshold": float(meta.inference.threshold),
            "median_filter_frames": int(meta.inference.median_filter),
            "chosen_on": "model inference.json",
        }
        random_post = dict(post)
    else:
        post, random_post = _choose_on_validation(
            aligner, meta, data_dir, val_split, run_dir=run_dir, seed=seed,
            batch_size=batch_size, phrase_reduction=phrase_reduction,
        )
    results = _metrics_document(
        test, test_random, post, random_post,
        split=split, val_split=val_split, seed=seed, model_dir=run_dir / "model",
        reduction=aligner.config.reduction, phrase_reduction=phrase_reduction,
    )
    plots = write_evaluation_plots(
        test, test_random, manifest=manifest, store_path=store_path, out_dir=run_dir / PLOTS_DIR,
        caption_indices=gallery_captions, threshold=post["threshold"],
        median_filter_frames=post["median_filter_frames"], run_dir=run_dir,
    )
    results["plots"] = [str(p.relative_to(run_dir)) for p in plots]
    write_metrics(results, run_dir / METRICS_FILE)
    write_report(results, run_dir / REPORT_FILE, title=f"acalign evaluation: {run_dir.name} on {split}")
    return results


def _choose_on_validation(
    aligner: Any,
    meta: Any,
    data_dir: Path,
    val_split: str,
    *,
    run_dir: Path,
    seed: int,
    batch_size: int,
    phrase_reduction: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose the model's and the random scorer's post-processing on ``val_split``; store the
    model's in ``RUN_DIR/model/inference.json``."""
    from acalign.models.export import InferenceConfig, update_inference

    manifest, store_path = _open_split(data_dir, val_split)
    val = _score_stored_split(
        aligner, meta, manifest, store_path, batch_size=batch_size, with_similarity=False,
        phrase_reduction=phrase_reduction,
    )
    if not split_annotated(val.pairs)[0]:
        raise DataError(f"{manifest.source}: no annotated phrase to choose the event threshold on")
    post = {**choose_postprocessing(val.pairs, frame_rate=val.frame_rate), "chosen_on": val_split}
    post["threshold"] = _storable_threshold(post["threshold"])
    random_val = random_split_scores(val, seed=seed + 1)
    random_post = {**choose_postprocessing(random_val.pairs, frame_rate=val.frame_rate), "chosen_on": val_split}
    update_inference(
        run_dir / "model",
        InferenceConfig(threshold=post["threshold"], median_filter=post["median_filter_frames"]),
    )
    return post, random_post


def _storable_threshold(threshold: float) -> float:
    # inference.json holds a threshold in [0, 1] (clamped cosines live there); an unclamped
    # model's negative activations would otherwise make the exported model unloadable.
    clipped = min(1.0, max(0.0, float(threshold)))
    if clipped != threshold:
        log.warning("threshold %.4f chosen on validation clipped to %.4f for inference.json", threshold, clipped)
    return clipped


def _open_split(data_dir: Path, split: str) -> tuple[Any, Path]:
    """Read ``DIR/{split}.json`` and check that ``DIR/features/{split}.h5`` exists."""
    from acalign.data.manifest import read_manifest

    store_path = data_dir / "features" / f"{split}.h5"
    manifest = read_manifest(data_dir / f"{split}.json")
    if not store_path.is_file():
        raise DataError(f"{store_path}: feature store not found; run `acalign features {data_dir}` first")
    return manifest, store_path


def _score_stored_split(aligner: Any, meta: Any, manifest: Any, store_path: Path, **kwargs: Any) -> SplitScores:
    from acalign.data.features import FeatureStore

    with FeatureStore(store_path) as store:
        if store.config != meta.feature_config:
            raise ModelError(
                f"{store_path}: features were extracted with {store.config}, but the model at "
                f"{meta.path} expects {meta.feature_config}"
            )
        return score_split(aligner, manifest, store, **kwargs)


def _first_caption_indices(manifest: Any, n_clips: int) -> list[int]:
    """Caption index of the first caption of each of the first ``n_clips`` clips with one."""
    indices, offset = [], 0
    for clip in manifest.clips:
        if len(indices) >= n_clips:
            break
        if clip.captions:
            indices.append(offset)
        offset += len(clip.captions)
    return indices


def _metrics_document(
    test: SplitScores,
    test_random: SplitScores,
    post: dict[str, Any],
    random_post: dict[str, Any],
    *,
    split: str,
    val_split: str | None,
    seed: int,
    model_dir: Path,
    reduction: str,
    phrase_reduction: str,
) -> dict[str, Any]:
    model = evaluate_scores(
        similarity=test.similarity, caption_to_audio=test.caption_to_audio, pairs=test.pairs,
        frame_rate=test.frame_rate, threshold=post["threshold"],
        median_filter_frames=post["median_filter_frames"], seed=seed,
    )
    floor = evaluate_scores(
        similarity=test_random.similarity, caption_to_audio=test_random.caption_to_audio,
        pairs=test_random.pairs, frame_rate=test_random.frame_rate, threshold=random_post["threshold"],
        median_filter_frames=random_post["median_filter_frames"], seed=seed,
    )
    return {
        "split": split,
        "val_split": val_split,
        "model": str(model_dir),
        "retrieval": model["retrieval"],
        "sed": model["sed"],
        "postprocessing": post,
        "random_baseline": {
            "retrieval": floor["retrieval"],
            "sed": floor["sed"],
            "postprocessing": random_post,
            "seed": seed,
        },
        "counts": model["counts"],
        "settings": settings_document(
            frame_rate=test.frame_rate, reduction=reduction, phrase_reduction=phrase_reduction, seed=seed
        ),
    }


def settings_document(*, frame_rate: float, reduction: str, phrase_reduction: str, seed: int) -> dict[str, Any]:
    """The evaluation settings recorded next to the numbers."""
    return {
        "frame_rate": frame_rate,
        "clip_caption_reduction": reduction,
        "phrase_reduction": phrase_reduction,
        "seed": seed,
        "ties": "pessimistic",
        "psds": {**PSDS_SETTINGS, "median_filter": "the chosen median filter is applied first"},
        "event_f1": {"t_collar_s": EVENT_COLLAR_S, "offset_collar_rate": EVENT_OFFSET_COLLAR_RATE},
        "frame_auc": "pooled over all frames of all annotated phrase pairs",
    }


# =========================================================================== plots


def write_evaluation_plots(
    test: SplitScores,
    test_random: SplitScores,
    *,
    manifest: Any,
    store_path: Path,
    out_dir: Path,
    caption_indices: Sequence[int],
    threshold: float,
    median_filter_frames: int,
    run_dir: Path | None = None,
) -> list[Path]:
    """Gallery, similarity matrices, P/R/F1 against threshold and training curves into ``out_dir``.

    Args:
        test: the model's scores on the split (``frame_word`` holds the matrices to draw).
        test_random: the random scorer's, for the P/R/F1 figure.
        manifest: the split's manifest; ``store_path`` its feature store.
        out_dir: the plots folder.
        caption_indices: captions (one per gallery clip) to draw, in order.
        threshold: event threshold drawn on the activations.
        median_filter_frames: median filter applied to the drawn activations.
        run_dir: where to look for Lightning's ``metrics.csv`` (no training plot when ``None``).

    Returns:
        The written paths.
    """
    from acalign import plots
    from acalign.data.features import FeatureStore

    captions = list(manifest.captions())
    activations = {p.pair_id: p.activation for p in test.pairs}
    clips: list[plots.GalleryClip] = []
    similarity_paths: list[Path] = []
    with FeatureStore(store_path) as store:
        for rank, c in enumerate(caption_indices):
            clip, caption = captions[c]
            title = f"{clip.audio_id}: {caption.text}"
            phrases = _gallery_phrases(activations, clip.audio_id, caption, median_filter_frames=median_filter_frames)
            clips.append(plots.GalleryClip(title, store[clip.audio_id], phrases))
            if c in test.frame_word:
                similarity_paths.append(
                    plots.plot_similarity_matrix(
                        test.frame_word[c], caption.tokens, frame_rate=test.frame_rate,
                        path=out_dir / f"similarity_{rank:02d}.png", title=title,
                    )
                )
    written = plots.plot_gallery(clips, out_dir=out_dir, frame_rate=test.frame_rate, threshold=threshold)
    written += similarity_paths
    if split_annotated(test.pairs)[0]:
        curves = {
            "model": frame_prf_curve(test.pairs, frame_rate=test.frame_rate),
            "random": frame_prf_curve(test_random.pairs, frame_rate=test.frame_rate),
        }
        written.append(plots.plot_prf_threshold(curves, path=out_dir / "prf_threshold.png"))
    if run_dir is not None:
        training = plots.plot_training_curves(run_dir, path=out_dir / "training_curves.png")
        if training is not None:
            written.append(training)
    return written


def _gallery_phrases(
    activations: dict[str, np.ndarray], audio_id: str, caption: Any, *, median_filter_frames: int
) -> list[Any]:
    from acalign.plots import GalleryPhrase
    from acalign.postprocess import median_filter

    return [
        GalleryPhrase(
            text=phrase.text,
            activation=median_filter(
                activations[pair_id(audio_id, caption.caption_id, k)], filter_frames=median_filter_frames
            ),
            segments=[(s.onset, s.offset) for s in phrase.events],
            annotated=phrase.annotated,
        )
        for k, phrase in enumerate(caption.phrases)
    ]


# =========================================================================== writing


def write_metrics(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``results`` as JSON atomically; NaN (an undefined metric) becomes ``null``."""
    atomic_write_json(path, _json_safe(results))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


RETRIEVAL_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10")
SED_COLUMNS = (
    ("frame AUC", "frame_auc"),
    ("PSDS", "psds"),
    ("event F1", "event_f1"),
    ("event P", "event_precision"),
    ("event R", "event_recall"),
    ("best frame F1 (min–max, 99 thr.)", "frame_f1_best"),
)
DIRECTIONS = (("text→audio", "text_to_audio"), ("audio→text", "audio_to_text"))


def render_report(results: dict[str, Any], *, title: str = "acalign evaluation") -> str:
    """Render a metrics document (as :func:`evaluate_run` writes it) as Markdown tables.

    Every table shows the uniform-random floor next to the model.
    """
    floor = results["random_baseline"]
    counts = results["counts"]
    post = results["postprocessing"]
    lines = [f"# {title}", ""]
    lines += [
        f"Split `{results.get('split', '?')}`: {counts['clips']} clips, {counts['captions']} captions, "
        f"{counts['phrases']} phrase pairs ({counts['phrases_scored']} scored).",
        "",
        "## Retrieval (whole split)",
        "",
        "Ranks break ties pessimistically. mAP@10 as in DCASE task 6b (AP@10 normalised by "
        "min(relevant, 10); text→audio has one relevant clip, audio→text all the clip's captions).",
        "",
    ]
    rows = []
    for label, key in DIRECTIONS:
        for system, source in (("model", results), ("random", floor)):
            values = source["retrieval"][key]
            rows.append([label, system, *(_fmt(values[c]) for c in RETRIEVAL_COLUMNS)])
    lines += _table(["direction", "system", *RETRIEVAL_COLUMNS], rows)
    protocol = results["retrieval"]["paper_protocol"]
    lines += [
        "",
        "## Retrieval, paper protocol",
        "",
        f"Each clip against {protocol['n_candidates']} candidates (its own plus "
        f"{protocol['n_candidates'] - 1} random distractors), one random caption per clip; "
        f"mean ± std over {protocol['n_repeats']} seeded repeats.",
        "",
    ]
    rows = []
    for label, key in DIRECTIONS:
        for system, source in (("model", results), ("random", floor)):
            values = source["retrieval"]["paper_protocol"][key]
            rows.append([label, system, *(f"{_fmt(v['mean'])} ± {_fmt(v['std'])}" for v in values.values())])
    ks = list(protocol["text_to_audio"])
    lines += _table(["direction", "system", *ks], rows)
    lines += [
        "",
        "## Phrase-based sound event detection",
        "",
        "Each (clip, phrase) pair is one file with one event class (TAG convention). "
        "PSDS: dtc = gtc = 0.5, no cross-trigger, eFPR up to 100/hour (sed_scores_eval), on the "
        "median-filtered activations. "
        "Event F1: 200 ms collar, offset collar max(200 ms, 20 % of the event) (sed_eval). "
        "Frame AUC pooled over all frames.",
        "",
    ]
    rows = [
        [system, *(_fmt(source["sed"][key]) for _, key in SED_COLUMNS)]
        for system, source in (("model", results), ("random", floor))
    ]
    lines += _table(["system", *(name for name, _ in SED_COLUMNS)], rows)
    chosen = post.get("chosen_on", "?")
    lines += [
        "",
        f"Event threshold {_fmt(post['threshold'], 4)} and median filter {post['median_filter_frames']} "
        f"frame(s), chosen on `{chosen}` (random: {_fmt(floor['postprocessing']['threshold'], 4)}, "
        f"{floor['postprocessing']['median_filter_frames']} frame(s)).",
        "",
        f"Note: {counts['phrases_unannotated']} of {counts['phrases']} phrase pairs are not annotated "
        "(`[[0, 0]]`) and are left out of every SED metric (event metrics included).",
    ]
    plot_files = results.get("plots") or []
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plot_files]
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], path: str | os.PathLike, *, title: str = "acalign evaluation") -> Path:
    """Write :func:`render_report` of ``results`` to ``path`` atomically; return the path."""
    path = Path(path)
    atomic_write_text(path, render_report(results, title=title))
    return path


# =========================================================================== comparison


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``RUN_DIR/metrics.json``; raise :class:`AcalignError` naming the file on a problem."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise AcalignError(f"{path}: metrics not found; run `acalign evaluate {run_dir}` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AcalignError(f"{path}: unreadable metrics ({exc})") from None
    if not isinstance(data, dict) or "retrieval" not in data or "sed" not in data:
        raise AcalignError(f"{path}: not an acalign metrics file (no 'retrieval'/'sed')")
    return data


COMPARISON_COLUMNS = (
    ("T→A R@1", ("retrieval", "text_to_audio", "R@1")),
    ("T→A R@10", ("retrieval", "text_to_audio", "R@10")),
    ("T→A mAP@10", ("retrieval", "text_to_audio", "mAP@10")),
    ("A→T R@1", ("retrieval", "audio_to_text", "R@1")),
    ("A→T R@10", ("retrieval", "audio_to_text", "R@10")),
    ("A→T mAP@10", ("retrieval", "audio_to_text", "mAP@10")),
    ("paper T→A R@1", ("retrieval", "paper_protocol", "text_to_audio", "R@1", "mean")),
    ("paper T→A R@5", ("retrieval", "paper_protocol", "text_to_audio", "R@5", "mean")),
    ("frame AUC", ("sed", "frame_auc")),
    ("PSDS", ("sed", "psds")),
    ("event F1", ("sed", "event_f1")),
)


#: How the comparison describes the run names the demo uses.
KNOWN_RUNS = {
    "paper": "the paper's configuration",
    "default": "our default configuration",
    "supervised": "the supervised upper bound (trained on frame-level labels)",
}


def _lookup(document: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


def write_comparison_report(
    runs: dict[str, str | os.PathLike],
    out_md: str | os.PathLike,
    *,
    supervised: str = "supervised",
) -> Path:
    """Put evaluated runs side by side with the random floor, in one Markdown table.

    Args:
        runs: display name → run folder holding ``metrics.json`` (e.g. ``{"paper": ...,
            "default": ..., "supervised": ...}``), in table order.
        out_md: the Markdown file to write.
        supervised: the name in ``runs`` of the supervised upper bound; every other run's PSDS is
            also given as a ratio to it (omitted when absent).

    Returns:
        ``out_md`` as a Path.
    """
    if not runs:
        raise AcalignError("write_comparison_report: no run to compare")
    documents = {name: read_metrics(run_dir) for name, run_dir in runs.items()}
    splits = {doc.get("split") for doc in documents.values()}
    supervised_psds = _lookup(documents[supervised], ("sed", "psds")) if supervised in documents else None
    header = ["system", *(name for name, _ in COMPARISON_COLUMNS)]
    if supervised_psds is not None:
        header.append(f"PSDS ÷ {supervised}")
    rows = []
    for name, doc in documents.items():
        rows.append(_comparison_row(name, doc, supervised_psds))
    first = next(iter(documents.values()))
    rows.append(_comparison_row("random", first["random_baseline"], supervised_psds))
    lines = [
        "# acalign: comparison of runs",
        "",
        f"Split: {', '.join(sorted(str(s) for s in splits))}. Random = a uniform-random scorer evaluated "
        f"with the same code (from the `{next(iter(documents))}` evaluation).",
        "",
        *_table(header, rows),
        "",
        *(f"- `{name}`: {KNOWN_RUNS[name]}" for name in documents if name in KNOWN_RUNS),
        "- `random`: a uniform-random scorer, the floor",
        "",
        "Phrases not annotated (`[[0, 0]]`) are left out of the SED metrics. Event thresholds were "
        "chosen on the validation split of each run.",
    ]
    if len(splits) > 1:
        lines += ["", "Warning: the runs were evaluated on different splits; the rows are not comparable."]
    path = Path(out_md)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _comparison_row(name: str, doc: dict[str, Any], supervised_psds: float | None) -> list[str]:
    row = [name, *(_fmt(_lookup(doc, keys)) for _, keys in COMPARISON_COLUMNS)]
    if supervised_psds is not None:
        psds = _lookup(doc, ("sed", "psds"))
        ratio = psds / supervised_psds if psds is not None and supervised_psds > 0 else None
        row.append(_fmt(ratio, 2))
    return row
