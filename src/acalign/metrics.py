"""Metrics on plain arrays: retrieval from one similarity matrix, phrase-based SED from activations.

Retrieval (text→audio and audio→text) derives everything from one similarity matrix
``S`` of shape ``(n_audio, n_captions)`` and ``caption_to_audio`` (``(n_captions,)``, the clip
index of each caption):

* **Ranks** are 1-based. Ties are broken *pessimistically*: an item tied with a relevant one is
  ranked above it when irrelevant, so a constant scorer gets the floor, never a free hit.
* **R@k** — fraction of queries with a relevant item in the top ``k``.
* **mAP@10** — DCASE task 6b: ``AP@10 = (1 / min(n_relevant, 10)) * Σ_{relevant r, rank_r ≤ 10}
  precision@rank_r``. Text→audio has one relevant clip, so ``AP@10 = 1 / rank`` when
  ``rank ≤ 10`` else 0; audio→text has all captions of the clip relevant.
* **Paper protocol** (Xie et al. 2022) — per clip one random caption and 29 random distractor
  clips, R@1/R@5 among the 30 candidates, mean and std over 20 seeded repeats.

Phrase-based SED follows the Text-to-Audio Grounding convention (Xu et al.): every
(clip, phrase) pair is one "file" with one event class. Phrases marked ``[[0, 0]]`` (not
annotated) carry no label and are left out of every SED metric; :func:`sed_metrics` counts them.
PSDS comes from ``sed_scores_eval``, event-based F1 from ``sed_eval``, and the threshold sweep
that picks the event-F1 threshold on validation from ``sed_scores_eval``'s collar-based
intermediate statistics (the same collars, checked there against ``sed_eval``).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from acalign.errors import AcalignError
from acalign.postprocess import (
    frame_boundaries,
    median_filter,
    merge_segments,
    segments_to_frame_labels,
)

RETRIEVAL_KS: tuple[int, ...] = (1, 5, 10)
MAP_CUTOFF = 10
PAPER_CANDIDATES = 30
PAPER_REPEATS = 20
PAPER_KS: tuple[int, ...] = (1, 5)

EVENT_LABEL = "phrase"
# Event-based F1: 200 ms onset collar; offset collar max(200 ms, 20 % of the event's length),
# the DCASE convention (sed_eval's own default rate is 50 %).
EVENT_COLLAR_S = 0.2
EVENT_OFFSET_COLLAR_RATE = 0.2
# PSDS: the TAG setting. One class per file, so there is no cross-trigger (alpha_ct = 0) and no
# across-class instability (alpha_st = 0); eFPR up to 100 false positives per hour.
PSDS_SETTINGS: dict[str, Any] = {
    "dtc_threshold": 0.5,
    "gtc_threshold": 0.5,
    "cttc_threshold": None,
    "alpha_ct": 0.0,
    "alpha_st": 0.0,
    "unit_of_time": "hour",
    "max_efpr": 100.0,
}
PRF_THRESHOLDS = np.round(np.linspace(0.01, 0.99, 99), 2)
MEDIAN_FILTER_CHOICES: tuple[int, ...] = (1, 5, 11, 21)


# =========================================================================== retrieval


def text_to_audio_ranks(
    similarity: np.ndarray, *, caption_to_audio: np.ndarray, chunk_size: int = 1024
) -> np.ndarray:
    """Rank of each caption's own clip among all clips (1-based, pessimistic ties).

    Args:
        similarity: ``(n_audio, n_captions)`` clip–caption scores.
        caption_to_audio: ``(n_captions,)`` clip index of each caption.
        chunk_size: captions per block; bounds the temporary ``(n_audio, chunk_size)`` arrays.

    Returns:
        int64 array, shape ``(n_captions,)``.
    """
    similarity, caption_to_audio = _check_retrieval_inputs(similarity, caption_to_audio)
    n_captions = similarity.shape[1]
    ranks = np.empty(n_captions, dtype=np.int64)
    for start in range(0, n_captions, chunk_size):
        stop = min(start + chunk_size, n_captions)
        block = similarity[:, start:stop]
        true = block[caption_to_audio[start:stop], np.arange(stop - start)]
        # ">=" counts the relevant clip itself once and every clip tied with it: pessimistic.
        ranks[start:stop] = (block >= true).sum(axis=0)
    return ranks


def audio_to_text_ranks(
    similarity: np.ndarray, *, caption_to_audio: np.ndarray, chunk_size: int = 1024
) -> np.ndarray:
    """Rank of each caption among all captions when its clip is the query (1-based).

    Ties: an irrelevant caption tied with a relevant one ranks above it; relevant captions tied
    with each other keep caption-index order (interchangeable, so no metric depends on it).

    Args:
        similarity: ``(n_audio, n_captions)`` clip–caption scores.
        caption_to_audio: ``(n_captions,)`` clip index of each caption.
        chunk_size: captions per block; bounds the temporary ``(chunk_size, n_captions)`` arrays.

    Returns:
        int64 array, shape ``(n_captions,)``: ``ranks[j]`` is caption ``j``'s rank for the query
        clip ``caption_to_audio[j]``.
    """
    similarity, caption_to_audio = _check_retrieval_inputs(similarity, caption_to_audio)
    n_captions = similarity.shape[1]
    caption_index = np.arange(n_captions)
    ranks = np.empty(n_captions, dtype=np.int64)
    for start in range(0, n_captions, chunk_size):
        stop = min(start + chunk_size, n_captions)
        queries = caption_to_audio[start:stop]
        rows = similarity[queries]  # (b, n_captions)
        true = rows[np.arange(stop - start), caption_index[start:stop]][:, None]
        relevant = caption_to_audio[None, :] == queries[:, None]
        not_after = caption_index[None, :] <= caption_index[start:stop, None]
        tied = rows == true
        ranks[start:stop] = (
            (rows > true).sum(axis=1)
            + (tied & ~relevant).sum(axis=1)
            + (tied & relevant & not_after).sum(axis=1)
        )
    return ranks


def text_to_audio_metrics(
    similarity: np.ndarray,
    *,
    caption_to_audio: np.ndarray,
    ks: Sequence[int] = RETRIEVAL_KS,
) -> dict[str, float]:
    """R@k and mAP@10 with every caption as a query and its clip the one relevant item.

    Args:
        similarity: ``(n_audio, n_captions)``.
        caption_to_audio: ``(n_captions,)``.
        ks: cut-offs for R@k.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "mAP@10": ...}``, each in ``[0, 1]``.
    """
    ranks = text_to_audio_ranks(similarity, caption_to_audio=caption_to_audio)
    metrics = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    average_precision = np.where(ranks <= MAP_CUTOFF, 1.0 / ranks, 0.0)
    metrics[f"mAP@{MAP_CUTOFF}"] = float(np.mean(average_precision))
    return metrics


def audio_to_text_metrics(
    similarity: np.ndarray,
    *,
    caption_to_audio: np.ndarray,
    ks: Sequence[int] = RETRIEVAL_KS,
) -> dict[str, float]:
    """R@k and mAP@10 with every clip as a query and all its captions relevant.

    R@k counts a clip as a hit when any of its captions is in the top ``k``; AP@10 is normalised
    by ``min(n_relevant, 10)`` (module docstring).

    Args:
        similarity: ``(n_audio, n_captions)``; every clip must have at least one caption.
        caption_to_audio: ``(n_captions,)``.
        ks: cut-offs for R@k.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "mAP@10": ...}``, each in ``[0, 1]``.
    """
    ranks = audio_to_text_ranks(similarity, caption_to_audio=caption_to_audio)
    caption_to_audio = np.asarray(caption_to_audio, dtype=np.int64)
    n_audio = similarity.shape[0]
    order = np.lexsort((ranks, caption_to_audio))  # by clip, then by rank
    clip_sorted, rank_sorted = caption_to_audio[order], ranks[order]
    first = np.searchsorted(clip_sorted, np.arange(n_audio))
    # 1-based position of each relevant caption among its clip's captions, by rank.
    position = np.arange(len(order)) - first[clip_sorted] + 1
    best_rank = rank_sorted[first]
    metrics = {f"R@{k}": float(np.mean(best_rank <= k)) for k in ks}
    precision_terms = np.where(rank_sorted <= MAP_CUTOFF, position / rank_sorted, 0.0)
    n_relevant = np.bincount(caption_to_audio, minlength=n_audio)
    average_precision = np.bincount(clip_sorted, weights=precision_terms, minlength=n_audio) / (
        np.minimum(n_relevant, MAP_CUTOFF)
    )
    metrics[f"mAP@{MAP_CUTOFF}"] = float(np.mean(average_precision))
    return metrics


def retrieval_metrics(similarity: np.ndarray, *, caption_to_audio: np.ndarray) -> dict[str, dict[str, float]]:
    """Both directions over the whole split: ``{"text_to_audio": {...}, "audio_to_text": {...}}``.

    ``similarity`` has shape ``(n_audio, n_captions)``; ``caption_to_audio`` ``(n_captions,)``.
    """
    return {
        "text_to_audio": text_to_audio_metrics(similarity, caption_to_audio=caption_to_audio),
        "audio_to_text": audio_to_text_metrics(similarity, caption_to_audio=caption_to_audio),
    }


def paper_protocol(
    similarity: np.ndarray,
    *,
    caption_to_audio: np.ndarray,
    n_candidates: int = PAPER_CANDIDATES,
    n_repeats: int = PAPER_REPEATS,
    seed: int = 0,
    ks: Sequence[int] = PAPER_KS,
) -> dict[str, Any]:
    """The 30-candidate retrieval protocol of Xie et al. (2022), in both directions.

    Each repeat draws, for every clip, one random caption of it and ``n_candidates - 1``
    distinct random distractor clips (each represented by its own drawn caption). Text→audio: the
    caption ranks its clip among the candidate clips; audio→text: the clip ranks its caption
    among the candidates' captions. Ties are pessimistic. R@k is averaged over clips, then the
    mean and the sample standard deviation (ddof = 1) are taken over repeats.

    Args:
        similarity: ``(n_audio, n_captions)``.
        caption_to_audio: ``(n_captions,)``.
        n_candidates: candidates per query, the relevant one included; at most ``n_audio``.
        n_repeats: number of seeded repeats.
        seed: seed of the random draws.
        ks: cut-offs.

    Returns:
        ``{"n_candidates", "n_repeats", "seed", "text_to_audio": {"R@1": {"mean", "std"}, ...},
        "audio_to_text": {...}}``.
    """
    similarity, caption_to_audio = _check_retrieval_inputs(similarity, caption_to_audio)
    n_audio = similarity.shape[0]
    if not 2 <= n_candidates <= n_audio:
        raise AcalignError(
            f"paper protocol needs 2 <= n_candidates <= number of clips ({n_audio}), got {n_candidates}"
        )
    if n_repeats < 1:
        raise AcalignError(f"n_repeats must be at least 1, got {n_repeats}")
    rng = np.random.default_rng(seed)
    hits = {direction: {k: [] for k in ks} for direction in ("text_to_audio", "audio_to_text")}
    clips = np.arange(n_audio)
    for _ in range(n_repeats):
        picked = _one_random_caption_per_clip(rng, caption_to_audio, n_audio)
        distractors = _random_distractors(rng, n_audio, n_candidates - 1)  # (n_audio, n - 1)
        true = similarity[clips, picked]
        t2a_rank = 1 + (similarity[distractors, picked[:, None]] >= true[:, None]).sum(axis=1)
        a2t_rank = 1 + (similarity[clips[:, None], picked[distractors]] >= true[:, None]).sum(axis=1)
        for k in ks:
            hits["text_to_audio"][k].append(np.mean(t2a_rank <= k))
            hits["audio_to_text"][k].append(np.mean(a2t_rank <= k))
    result: dict[str, Any] = {"n_candidates": n_candidates, "n_repeats": n_repeats, "seed": seed}
    for direction, per_k in hits.items():
        result[direction] = {
            f"R@{k}": {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if n_repeats > 1 else 0.0,
            }
            for k, values in per_k.items()
        }
    return result


def _one_random_caption_per_clip(
    rng: np.random.Generator, caption_to_audio: np.ndarray, n_audio: int
) -> np.ndarray:
    order = np.argsort(caption_to_audio, kind="stable")
    counts = np.bincount(caption_to_audio, minlength=n_audio)
    starts = np.cumsum(counts) - counts
    offsets = np.minimum((rng.random(n_audio) * counts).astype(np.int64), counts - 1)
    return order[starts + offsets]


def _random_distractors(rng: np.random.Generator, n_audio: int, n_distractors: int) -> np.ndarray:
    drawn = np.stack([rng.choice(n_audio - 1, size=n_distractors, replace=False) for _ in range(n_audio)])
    # Draw from the n_audio - 1 other clips, then skip over the query clip itself.
    return drawn + (drawn >= np.arange(n_audio)[:, None])


def _check_retrieval_inputs(
    similarity: np.ndarray, caption_to_audio: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    similarity = np.asarray(similarity)
    caption_to_audio = np.asarray(caption_to_audio)
    if similarity.ndim != 2 or 0 in similarity.shape:
        raise AcalignError(f"similarity must be a non-empty (n_audio, n_captions) matrix, got shape {similarity.shape}")
    if caption_to_audio.shape != (similarity.shape[1],):
        raise AcalignError(
            f"caption_to_audio must have shape ({similarity.shape[1]},) to match similarity, "
            f"got {caption_to_audio.shape}"
        )
    if not np.issubdtype(caption_to_audio.dtype, np.integer):
        raise AcalignError(f"caption_to_audio must hold integer clip indices, got dtype {caption_to_audio.dtype}")
    if caption_to_audio.min() < 0 or caption_to_audio.max() >= similarity.shape[0]:
        raise AcalignError(f"caption_to_audio holds a clip index outside [0, {similarity.shape[0]})")
    if not np.all(np.isfinite(similarity)):
        raise AcalignError("similarity holds NaN or infinite values")
    captionless = np.flatnonzero(np.bincount(caption_to_audio, minlength=similarity.shape[0]) == 0)
    if captionless.size:
        raise AcalignError(f"clip index {int(captionless[0])} has no caption; every clip needs one")
    return similarity, caption_to_audio.astype(np.int64)


# =========================================================================== phrase-based SED


@dataclass(frozen=True)
class PhraseActivation:
    """One (clip, phrase) pair, scored as one single-class "file" (TAG convention).

    Attributes:
        pair_id: unique name of the pair (becomes the file id in sed_eval/sed_scores_eval).
        activation: ``(T,)`` frame scores of the phrase in the clip.
        segments: ground-truth ``(onset, offset)`` events in seconds.
        annotated: ``False`` for a ``[[0, 0]]`` phrase; such a pair is left out of SED metrics.
    """

    pair_id: str
    activation: np.ndarray
    segments: tuple[tuple[float, float], ...] = ()
    annotated: bool = True


def split_annotated(pairs: Sequence[PhraseActivation]) -> tuple[list[PhraseActivation], int]:
    """Return the annotated pairs and the number of unannotated ones left out."""
    kept = [p for p in pairs if p.annotated]
    return kept, len(pairs) - len(kept)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney rank statistic.

    scikit-learn is not a dependency; the rank statistic is exact and O(n log n). Tied scores
    count one half (average ranks), as in ``sklearn.metrics.roc_auc_score``.

    Args:
        scores: ``(n,)`` scores.
        labels: ``(n,)`` booleans.

    Returns:
        AUC in ``[0, 1]``, or NaN when only one class is present.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise AcalignError(f"scores and labels must have the same length, got {scores.size} and {labels.size}")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def frame_auc(pairs: Sequence[PhraseActivation], *, frame_rate: float) -> float:
    """Frame-level ROC AUC pooled over every frame of every annotated pair (the TAG convention).

    Pooling weighs every frame equally, so a model must also rank frames *across* clips and
    phrases; frame labels follow :func:`acalign.postprocess.segments_to_frame_labels`.

    Returns:
        AUC in ``[0, 1]`` (NaN when the pooled frames are all positive or all negative).
    """
    scores, labels = _pooled_frames(pairs, frame_rate=frame_rate)
    return roc_auc(scores, labels)


def minmax_normalise(activation: np.ndarray) -> np.ndarray:
    """Scale a ``(T,)`` activation to ``[0, 1]`` over time, as the reference does.

    A constant activation carries no timing information and becomes all zeros (the reference
    divided by zero here), so it never crosses a positive threshold.
    """
    activation = np.asarray(activation, dtype=np.float64)
    low, high = activation.min(), activation.max()
    if high <= low:
        return np.zeros_like(activation)
    return (activation - low) / (high - low)


def frame_prf_curve(
    pairs: Sequence[PhraseActivation],
    *,
    frame_rate: float,
    thresholds: np.ndarray = PRF_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """The reference's frame-level precision, recall and F1 against threshold.

    Each activation is min–max normalised over time (:func:`minmax_normalise`), frames above a
    threshold are predicted active, and counts are pooled over all frames of all annotated
    pairs. Precision with no predicted frame is 0.

    Returns:
        ``{"thresholds", "precision", "recall", "f1"}``, each of shape ``(len(thresholds),)``.
    """
    normalised = [
        PhraseActivation(p.pair_id, minmax_normalise(p.activation), p.segments, p.annotated)
        for p in pairs
    ]
    scores, labels = _pooled_frames(normalised, frame_rate=frame_rate)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    positives = np.sort(scores[labels])
    negatives = np.sort(scores[~labels])
    tp = positives.size - np.searchsorted(positives, thresholds, side="right")
    fp = negatives.size - np.searchsorted(negatives, thresholds, side="right")
    precision = np.divide(tp, tp + fp, out=np.zeros(len(thresholds)), where=(tp + fp) > 0)
    recall = tp / positives.size if positives.size else np.zeros(len(thresholds))
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(len(thresholds)), where=denominator > 0)
    return {"thresholds": thresholds, "precision": precision, "recall": recall, "f1": f1}


def psds(pairs: Sequence[PhraseActivation], *, frame_rate: float, median_filter_frames: int = 1) -> float:
    """PSDS (``sed_scores_eval``, intersection-based, :data:`PSDS_SETTINGS`) of annotated pairs.

    PSDS sweeps every threshold itself; the median filter (chosen on validation, as in DCASE
    practice) is applied first so PSDS scores the same post-processing grounding uses.

    Returns:
        PSDS in ``[0, 1]``.
    """
    intersection_based = _import_sed_scores_eval().intersection_based
    annotated, _ = split_annotated(pairs)
    scores, ground_truth, durations = _sed_scores_inputs(
        annotated, frame_rate=frame_rate, median_filter_frames=median_filter_frames
    )
    value, *_ = intersection_based.psds(
        scores=scores, ground_truth=ground_truth, audio_durations=durations, **PSDS_SETTINGS
    )
    return float(value)


def event_f1(
    pairs: Sequence[PhraseActivation],
    *,
    frame_rate: float,
    threshold: float,
    median_filter_frames: int = 1,
) -> dict[str, float]:
    """Event-based F1 (``sed_eval``; 200 ms collar, offset collar rate 0.2) at one threshold.

    Each activation is turned into segments by
    :func:`acalign.postprocess.activation_to_segments`; counts are pooled over all pairs.

    Returns:
        ``{"f1", "precision", "recall"}``, each in ``[0, 1]``.
    """
    from acalign.postprocess import activation_to_segments

    sed_eval = _import_sed_eval()
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=[EVENT_LABEL],
        t_collar=EVENT_COLLAR_S,
        percentage_of_length=EVENT_OFFSET_COLLAR_RATE,
    )
    for pair in pairs:
        end = _duration(len(pair.activation), frame_rate)
        reference = [_event(pair.pair_id, on, off) for on, off in merge_segments(pair.segments, end=end)]
        detected = activation_to_segments(
            pair.activation, frame_rate=frame_rate, threshold=threshold, median_filter_frames=median_filter_frames
        )
        metric.evaluate(reference, [_event(pair.pair_id, on, off) for on, off in detected])
    overall = metric.results_overall_metrics()["f_measure"]
    return {key: float(overall[name]) for key, name in (("f1", "f_measure"), ("precision", "precision"), ("recall", "recall"))}


def choose_event_threshold(
    pairs: Sequence[PhraseActivation],
    *,
    frame_rate: float,
    median_filter_choices: Sequence[int] = MEDIAN_FILTER_CHOICES,
) -> dict[str, float]:
    """Pick the threshold and median filter length that maximise event-based F1 on ``pairs``.

    Meant for the validation split. For each median filter length, ``sed_scores_eval`` computes
    the collar-based statistics once and returns the best threshold over every distinct score
    (placed midway between neighbouring scores).

    Returns:
        ``{"threshold", "median_filter_frames", "f1"}``. When no threshold detects anything
        correctly, ``threshold`` is the largest activation (nothing is detected) and ``f1`` is 0.
    """
    collar_based = _import_sed_scores_eval().collar_based
    annotated, _ = split_annotated(pairs)
    if not annotated:
        raise AcalignError("cannot choose an event threshold: no annotated phrase to choose it on")
    best = {"threshold": float("nan"), "median_filter_frames": 1, "f1": -1.0}
    for filter_frames in median_filter_choices:
        scores, ground_truth, _ = _sed_scores_inputs(
            annotated, frame_rate=frame_rate, median_filter_frames=filter_frames
        )
        f1, _, _, threshold, _ = collar_based.best_fscore(
            scores=scores,
            ground_truth=ground_truth,
            onset_collar=EVENT_COLLAR_S,
            offset_collar=EVENT_COLLAR_S,
            offset_collar_rate=EVENT_OFFSET_COLLAR_RATE,
        )
        if f1[EVENT_LABEL] > best["f1"]:
            best = {
                "threshold": float(threshold[EVENT_LABEL]),
                "median_filter_frames": int(filter_frames),
                "f1": float(f1[EVENT_LABEL]),
            }
    # sed_scores_eval answers -inf when detecting every frame is best and +inf when nothing
    # achieves a true positive; activations are clamped cosines in [0, 1], so 0 and the largest
    # activation express those two cases as usable thresholds.
    if best["threshold"] == -np.inf:
        best["threshold"] = 0.0
    elif not np.isfinite(best["threshold"]):
        best["threshold"] = float(max(np.max(p.activation) for p in annotated))
    return best


def sed_metrics(
    pairs: Sequence[PhraseActivation],
    *,
    frame_rate: float,
    threshold: float,
    median_filter_frames: int = 1,
) -> dict[str, Any]:
    """Every SED metric on the annotated pairs; unannotated ones are counted and left out.

    Returns:
        ``{"frame_auc", "psds", "event_f1", "event_precision", "event_recall", "frame_f1_best",
        "frame_f1_best_threshold", "phrases_scored", "phrases_unannotated"}``.
    """
    annotated, n_unannotated = split_annotated(pairs)
    if not annotated:
        raise AcalignError("no annotated phrase to score: every phrase is [[0, 0]]")
    events = event_f1(
        annotated, frame_rate=frame_rate, threshold=threshold, median_filter_frames=median_filter_frames
    )
    curve = frame_prf_curve(annotated, frame_rate=frame_rate)
    best = int(np.argmax(curve["f1"]))
    return {
        "frame_auc": frame_auc(annotated, frame_rate=frame_rate),
        "psds": psds(annotated, frame_rate=frame_rate, median_filter_frames=median_filter_frames),
        "event_f1": events["f1"],
        "event_precision": events["precision"],
        "event_recall": events["recall"],
        "frame_f1_best": float(curve["f1"][best]),
        "frame_f1_best_threshold": float(curve["thresholds"][best]),
        "phrases_scored": len(annotated),
        "phrases_unannotated": n_unannotated,
    }


def _pooled_frames(pairs: Sequence[PhraseActivation], *, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    annotated, _ = split_annotated(pairs)
    if not annotated:
        raise AcalignError("no annotated phrase to score: every phrase is [[0, 0]]")
    scores = np.concatenate([np.asarray(p.activation, dtype=np.float64) for p in annotated])
    labels = np.concatenate(
        [segments_to_frame_labels(p.segments, n_frames=len(p.activation), frame_rate=frame_rate) for p in annotated]
    )
    return scores, labels


def _sed_scores_inputs(
    pairs: Sequence[PhraseActivation], *, frame_rate: float, median_filter_frames: int
) -> tuple[dict[str, Any], dict[str, list[tuple[float, float, str]]], dict[str, float]]:
    """Score DataFrames, ground-truth events and durations keyed by pair id (sed_scores_eval)."""
    create_score_dataframe = _import_sed_scores_eval().base_modules.scores.create_score_dataframe
    scores, ground_truth, durations = {}, {}, {}
    for pair in pairs:
        if pair.pair_id in scores:
            raise AcalignError(f"duplicate phrase pair id {pair.pair_id!r}")
        filtered = median_filter(pair.activation, filter_frames=median_filter_frames)
        boundaries = frame_boundaries(n_frames=len(filtered), frame_rate=frame_rate)
        scores[pair.pair_id] = create_score_dataframe(filtered[:, None], boundaries, [EVENT_LABEL])
        durations[pair.pair_id] = float(boundaries[-1])
        ground_truth[pair.pair_id] = [
            (on, off, EVENT_LABEL) for on, off in merge_segments(pair.segments, end=boundaries[-1])
        ]
    return scores, ground_truth, durations


def _duration(n_frames: int, frame_rate: float) -> float:
    return float(frame_boundaries(n_frames=n_frames, frame_rate=frame_rate)[-1])


def _event(file_id: str, onset: float, offset: float) -> dict[str, Any]:
    return {"filename": file_id, "event_label": EVENT_LABEL, "onset": onset, "offset": offset}


def _import_sed_eval() -> types.ModuleType:
    """Import ``sed_eval`` lazily (it pulls in ``dcase_util``, slow to import).

    ``dcase_util`` imports ``pkg_resources``; pyproject pins ``setuptools<81``, which ships it.
    """
    import sed_eval

    return sed_eval


def _import_sed_scores_eval() -> types.ModuleType:
    """Import ``sed_scores_eval`` lazily (0.0.4 needs ``pandas<3``, pinned in pyproject)."""
    import sed_scores_eval

    return sed_scores_eval


# =========================================================================== random baseline


@dataclass(frozen=True)
class RandomScores:
    """Uniform-random scores shaped like a model's outputs.

    Attributes:
        similarity: ``(n_audio, n_captions)`` clip–caption scores.
        activations: one ``(T_i,)`` frame activation per phrase pair.
    """

    similarity: np.ndarray
    activations: list[np.ndarray]


def random_scores(
    *, n_audio: int, n_captions: int, n_frames: Sequence[int], seed: int = 0
) -> RandomScores:
    """Draw a uniform-random scorer (the floor in every table), seeded for reproducibility.

    Args:
        n_audio: clips in the split.
        n_captions: captions in the split.
        n_frames: frame count of each phrase pair's activation.
        seed: RNG seed.

    Returns:
        :class:`RandomScores` with values uniform in ``[0, 1)``.
    """
    rng = np.random.default_rng(seed)
    similarity = rng.random((n_audio, n_captions))
    activations = [rng.random(int(t)) for t in n_frames]
    return RandomScores(similarity=similarity, activations=activations)
