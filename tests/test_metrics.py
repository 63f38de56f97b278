"""Retrieval and phrase-SED metrics: hand-worked examples, reference loops, the random floor."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from acalign.errors import AcalignError
from acalign.metrics import (
    PhraseActivation,
    audio_to_text_metrics,
    audio_to_text_ranks,
    choose_event_threshold,
    event_f1,
    frame_auc,
    frame_prf_curve,
    minmax_normalise,
    paper_protocol,
    psds,
    random_scores,
    roc_auc,
    sed_metrics,
    text_to_audio_metrics,
    text_to_audio_ranks,
)
from acalign.postprocess import segments_to_frame_labels

# --------------------------------------------------------------------------- plain reference


def _reference_query(scores, relevant):
    """Ranks of the relevant items, by a plain sort: score down, irrelevant first on ties, index."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], relevant[i], i))
    return [position + 1 for position, item in enumerate(order) if relevant[item]]


def _reference_metrics(similarity, caption_to_audio, direction):
    n_audio, n_captions = similarity.shape
    if direction == "text_to_audio":
        queries = [
            (similarity[:, c].tolist(), [a == caption_to_audio[c] for a in range(n_audio)])
            for c in range(n_captions)
        ]
    else:
        queries = [
            (similarity[a, :].tolist(), [caption_to_audio[c] == a for c in range(n_captions)])
            for a in range(n_audio)
        ]
    hits = {1: [], 5: [], 10: []}
    precisions = []
    for scores, relevant in queries:
        ranks = _reference_query(scores, relevant)
        for k in hits:
            hits[k].append(any(r <= k for r in ranks))
        terms = [(m + 1) / r for m, r in enumerate(ranks) if r <= 10]
        precisions.append(sum(terms) / min(len(ranks), 10))
    result = {f"R@{k}": float(np.mean(v)) for k, v in hits.items()}
    result["mAP@10"] = float(np.mean(precisions))
    return result


# A hand-worked example: 3 clips, 4 captions (clip 0 has two).
HAND_SIMILARITY = np.array(
    [
        [0.9, 0.1, 0.3, 0.5],
        [0.2, 0.8, 0.7, 0.5],
        [0.1, 0.3, 0.2, 0.5],
    ]
)
HAND_CAPTION_TO_AUDIO = np.array([0, 0, 1, 2])


def test_text_to_audio_hand_example():
    ranks = text_to_audio_ranks(HAND_SIMILARITY, caption_to_audio=HAND_CAPTION_TO_AUDIO)
    # Caption 3's column is all 0.5: pessimistic ties put its clip last.
    assert ranks.tolist() == [1, 3, 1, 3]
    metrics = text_to_audio_metrics(HAND_SIMILARITY, caption_to_audio=HAND_CAPTION_TO_AUDIO)
    assert metrics == pytest.approx({"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "mAP@10": (1 + 1 / 3 + 1 + 1 / 3) / 4})


def test_audio_to_text_hand_example():
    ranks = audio_to_text_ranks(HAND_SIMILARITY, caption_to_audio=HAND_CAPTION_TO_AUDIO)
    assert ranks.tolist() == [1, 4, 2, 1]
    metrics = audio_to_text_metrics(HAND_SIMILARITY, caption_to_audio=HAND_CAPTION_TO_AUDIO)
    # Clip 0: captions at ranks 1 and 4 → AP = (1/1 + 2/4) / 2; clip 1: 1/2; clip 2: 1.
    assert metrics == pytest.approx({"R@1": 2 / 3, "R@5": 1.0, "R@10": 1.0, "mAP@10": (0.75 + 0.5 + 1.0) / 3})


def test_audio_to_text_ap_at_10_with_several_relevant_and_min_normalisation():
    # Clip 0 has captions 0..2, clip 1 has captions 3..14 (12 relevant: normalised by 10).
    caption_to_audio = np.array([0] * 3 + [1] * 12)
    similarity = np.zeros((2, 15))
    order_for_clip_0 = [0, 3, 1, 4, 5, 6, 7, 8, 9, 10, 11, 2, 12, 13, 14]  # caption 2 at rank 12
    similarity[0, order_for_clip_0] = np.arange(15, 0, -1)
    similarity[1, 3:] = 10.0  # clip 1's twelve captions fill its top 12
    metrics = audio_to_text_metrics(similarity, caption_to_audio=caption_to_audio)
    ap_clip_0 = (1 / 1 + 2 / 3) / 3  # ranks 1 and 3 count; rank 12 is past the cut-off
    ap_clip_1 = 10 / 10
    assert metrics["mAP@10"] == pytest.approx((ap_clip_0 + ap_clip_1) / 2)
    assert metrics["R@1"] == 1.0


@pytest.mark.parametrize("direction", ["text_to_audio", "audio_to_text"])
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_equals_reference_loop(rng, direction, ties):
    for _ in range(5):
        n_audio = int(rng.integers(2, 25))
        caption_to_audio = np.concatenate([np.arange(n_audio), rng.integers(0, n_audio, size=int(rng.integers(0, 40)))])
        rng.shuffle(caption_to_audio)
        shape = (n_audio, len(caption_to_audio))
        # Integer scores make ties frequent, the case where shortcuts go wrong.
        similarity = rng.integers(0, 4, size=shape).astype(float) if ties else rng.normal(size=shape)
        fast = (text_to_audio_metrics if direction == "text_to_audio" else audio_to_text_metrics)(
            similarity, caption_to_audio=caption_to_audio
        )
        assert fast == pytest.approx(_reference_metrics(similarity, caption_to_audio, direction))


def test_chunking_does_not_change_ranks(rng):
    caption_to_audio = rng.integers(0, 30, size=200)
    caption_to_audio[:30] = np.arange(30)
    similarity = rng.integers(0, 5, size=(30, 200)).astype(float)
    for ranks in (text_to_audio_ranks, audio_to_text_ranks):
        whole = ranks(similarity, caption_to_audio=caption_to_audio, chunk_size=10_000)
        chunked = ranks(similarity, caption_to_audio=caption_to_audio, chunk_size=7)
        np.testing.assert_array_equal(whole, chunked)


def test_perfect_scorer_gives_one_and_reversed_gives_the_floor():
    n = 40
    caption_to_audio = np.repeat(np.arange(n), 2)
    perfect = (np.arange(n)[:, None] == caption_to_audio[None, :]).astype(float)
    for metrics in (text_to_audio_metrics, audio_to_text_metrics):
        assert metrics(perfect, caption_to_audio=caption_to_audio) == pytest.approx(
            {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP@10": 1.0}
        )
        assert metrics(-perfect, caption_to_audio=caption_to_audio) == pytest.approx(
            {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "mAP@10": 0.0}
        )


def test_constant_scorer_gets_no_free_hit():
    caption_to_audio = np.arange(20)
    constant = np.ones((20, 20))
    assert text_to_audio_metrics(constant, caption_to_audio=caption_to_audio)["R@10"] == 0.0
    assert audio_to_text_metrics(constant, caption_to_audio=caption_to_audio)["R@10"] == 0.0


def test_random_scorer_recall_at_10_matches_theory():
    n_audio, per_clip, repeats = 50, 5, 20
    caption_to_audio = np.repeat(np.arange(n_audio), per_clip)
    t2a, a2t = [], []
    for seed in range(repeats):
        scores = random_scores(n_audio=n_audio, n_captions=len(caption_to_audio), n_frames=[], seed=seed)
        t2a.append(text_to_audio_metrics(scores.similarity, caption_to_audio=caption_to_audio)["R@10"])
        a2t.append(audio_to_text_metrics(scores.similarity, caption_to_audio=caption_to_audio)["R@10"])
    # Text→audio: P(rank ≤ 10) = 10 / n_audio, over n_captions × repeats independent queries.
    p_t2a = 10 / n_audio
    sd_t2a = math.sqrt(p_t2a * (1 - p_t2a) / (len(caption_to_audio) * repeats))
    assert abs(np.mean(t2a) - p_t2a) < 4 * sd_t2a
    # Audio→text: P(some of the 5 relevant among the top 10 of 250) = 1 - C(245, 10) / C(250, 10).
    n_captions = len(caption_to_audio)
    p_a2t = 1 - math.comb(n_captions - per_clip, 10) / math.comb(n_captions, 10)
    sd_a2t = math.sqrt(p_a2t * (1 - p_a2t) / (n_audio * repeats))
    assert abs(np.mean(a2t) - p_a2t) < 4 * sd_a2t


@pytest.mark.parametrize(
    ("similarity", "caption_to_audio", "message"),
    [
        (np.zeros((2, 3)), np.array([0, 1]), "caption_to_audio must have shape"),
        (np.zeros((3, 2)), np.array([0, 1]), "has no caption"),
        (np.array([[np.nan, 0.0], [0.0, 0.0]]), np.array([0, 1]), "NaN"),
        (np.zeros((2, 2)), np.array([0, 2]), "outside"),
        (np.zeros(4), np.array([0]), "matrix"),
    ],
)
def test_retrieval_input_errors(similarity, caption_to_audio, message):
    with pytest.raises(AcalignError, match=message):
        text_to_audio_metrics(similarity, caption_to_audio=caption_to_audio)


# --------------------------------------------------------------------------- paper protocol


def test_paper_protocol_perfect_scorer():
    caption_to_audio = np.repeat(np.arange(40), 5)
    perfect = (np.arange(40)[:, None] == caption_to_audio[None, :]).astype(float)
    result = paper_protocol(perfect, caption_to_audio=caption_to_audio, seed=3)
    assert result["n_candidates"] == 30 and result["n_repeats"] == 20
    for direction in ("text_to_audio", "audio_to_text"):
        assert result[direction]["R@1"] == {"mean": 1.0, "std": 0.0}


def test_paper_protocol_random_scorer_near_chance():
    caption_to_audio = np.repeat(np.arange(60), 2)
    r1, r5 = [], []
    for seed in range(10):
        similarity = random_scores(n_audio=60, n_captions=120, n_frames=[], seed=seed).similarity
        result = paper_protocol(similarity, caption_to_audio=caption_to_audio, seed=seed)
        r1.append(result["text_to_audio"]["R@1"]["mean"])
        r5.append(result["audio_to_text"]["R@5"]["mean"])
    # At least 600 independent (matrix, query) draws: 4 standard deviations of a binomial mean.
    assert abs(np.mean(r1) - 1 / 30) < 4 * math.sqrt((1 / 30) * (29 / 30) / 600)
    assert abs(np.mean(r5) - 5 / 30) < 4 * math.sqrt((5 / 30) * (25 / 30) / 600)


def test_paper_protocol_is_seeded(rng):
    caption_to_audio = np.repeat(np.arange(35), 3)
    similarity = rng.normal(size=(35, 105))
    first = paper_protocol(similarity, caption_to_audio=caption_to_audio, seed=7)
    assert first == paper_protocol(similarity, caption_to_audio=caption_to_audio, seed=7)
    assert first != paper_protocol(similarity, caption_to_audio=caption_to_audio, seed=8)


def test_paper_protocol_needs_enough_clips():
    with pytest.raises(AcalignError, match="n_candidates"):
        paper_protocol(np.eye(10), caption_to_audio=np.arange(10))


# --------------------------------------------------------------------------- SED

FRAME_RATE = 10.0


def _pair(name, activation, segments, annotated=True):
    return PhraseActivation(name, np.asarray(activation, dtype=float), tuple(segments), annotated)


def _labelled_pairs(rng, n, *, n_frames=100):
    """Pairs with one random event each and their frame labels."""
    pairs = []
    for i in range(n):
        onset = float(rng.uniform(0.0, 6.0))
        segments = [(onset, onset + float(rng.uniform(0.5, 3.0)))]
        labels = segments_to_frame_labels(segments, n_frames=n_frames, frame_rate=FRAME_RATE)
        pairs.append((f"pair{i}", labels, segments))
    return pairs


def test_roc_auc_equals_pairwise_count_with_ties(rng):
    scores = rng.integers(0, 5, size=60).astype(float)
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert roc_auc(scores, labels) == pytest.approx(pairwise)


def test_roc_auc_one_class_is_nan():
    assert math.isnan(roc_auc(np.arange(3.0), np.ones(3, dtype=bool)))


def test_sed_perfect_and_reversed_scorers(rng):
    raw = _labelled_pairs(rng, 20)
    perfect = [_pair(n, labels * 0.8 + 0.1, seg) for n, labels, seg in raw]
    reversed_ = [_pair(n, 0.9 - labels * 0.8, seg) for n, labels, seg in raw]
    assert frame_auc(perfect, frame_rate=FRAME_RATE) == 1.0
    assert frame_auc(reversed_, frame_rate=FRAME_RATE) == 0.0
    assert psds(perfect, frame_rate=FRAME_RATE) > 0.99
    assert psds(reversed_, frame_rate=FRAME_RATE) < 0.01
    assert event_f1(perfect, frame_rate=FRAME_RATE, threshold=0.5) == {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    assert event_f1(reversed_, frame_rate=FRAME_RATE, threshold=0.5)["f1"] == 0.0


def test_sed_random_scorer_is_near_the_floor(rng):
    raw = _labelled_pairs(rng, 60)
    drawn = random_scores(n_audio=1, n_captions=1, n_frames=[len(lab) for _, lab, _ in raw], seed=5)
    pairs = [_pair(n, act, seg) for (n, _, seg), act in zip(raw, drawn.activations, strict=True)]
    labels = np.concatenate([lab for _, lab, _ in raw])
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    # Under a scorer independent of the labels, AUC has mean 1/2 and this variance (Mann–Whitney).
    sd = math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    assert abs(frame_auc(pairs, frame_rate=FRAME_RATE) - 0.5) < 4 * sd
    assert psds(pairs, frame_rate=FRAME_RATE) < 0.1


def test_event_f1_hand_example():
    activation_hit = np.zeros(100)
    activation_hit[10:20] = 1.0  # frames at 1.0–1.9 s → segment (0.95, 1.95): inside both collars
    activation_miss = np.zeros(100)
    activation_miss[50:60] = 1.0  # far from the event: one false positive and one miss
    pairs = [_pair("hit", activation_hit, [(1.0, 2.0)]), _pair("miss", activation_miss, [(1.0, 2.0)])]
    assert event_f1(pairs, frame_rate=FRAME_RATE, threshold=0.5) == pytest.approx(
        {"f1": 0.5, "precision": 0.5, "recall": 0.5}
    )


def test_threshold_sweep_agrees_with_sed_eval(rng):
    raw = _labelled_pairs(rng, 25)
    # A noisy but informative scorer.
    pairs = [_pair(n, 0.5 * lab + 0.7 * rng.random(len(lab)), seg) for n, lab, seg in raw]
    chosen = choose_event_threshold(pairs, frame_rate=FRAME_RATE, median_filter_choices=(1, 5))
    assert chosen["median_filter_frames"] in (1, 5)
    at_threshold = event_f1(
        pairs, frame_rate=FRAME_RATE, threshold=chosen["threshold"], median_filter_frames=chosen["median_filter_frames"]
    )
    # sed_scores_eval's collar-based sweep and sed_eval agree on the chosen operating point.
    assert at_threshold["f1"] == pytest.approx(chosen["f1"])
    assert chosen["f1"] > 0.0


def test_constant_activation_does_not_divide_by_zero():
    constant = _pair("flat", np.full(50, 0.3), [(1.0, 2.0)])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        np.testing.assert_array_equal(minmax_normalise(constant.activation), np.zeros(50))
        curve = frame_prf_curve([constant], frame_rate=FRAME_RATE)
    assert np.all(np.isfinite(curve["f1"]))
    assert np.all(curve["f1"] == 0.0)  # a constant activation never crosses a positive threshold


def test_frame_prf_curve_hand_example():
    pair = _pair("p", [0.0, 0.5, 1.0, 1.0], [(2.0, 3.0)])
    curve = frame_prf_curve([pair], frame_rate=1.0, thresholds=np.array([0.01, 0.5, 0.99]))
    np.testing.assert_allclose(curve["precision"], [2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(curve["recall"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(curve["f1"], [0.8, 1.0, 1.0])


def test_unannotated_phrases_are_counted_and_left_out(rng):
    raw = _labelled_pairs(rng, 10)
    annotated = [_pair(n, 0.3 * lab + 0.7 * rng.random(len(lab)), seg) for n, lab, seg in raw]
    # Unannotated pairs with a loud activation would be false positives if they were scored.
    unannotated = [_pair(f"u{i}", np.ones(100), [(0.0, 0.0)], annotated=False) for i in range(4)]
    alone = sed_metrics(annotated, frame_rate=FRAME_RATE, threshold=0.5)
    mixed = sed_metrics(annotated + unannotated, frame_rate=FRAME_RATE, threshold=0.5)
    assert mixed["phrases_unannotated"] == 4 and mixed["phrases_scored"] == 10
    assert alone["phrases_unannotated"] == 0
    for key in ("frame_auc", "psds", "event_f1", "frame_f1_best"):
        assert mixed[key] == pytest.approx(alone[key])


def test_sed_metrics_without_annotated_phrase_is_an_error():
    with pytest.raises(AcalignError, match="no annotated phrase"):
        sed_metrics([_pair("u", np.ones(5), [(0.0, 0.0)], annotated=False)], frame_rate=FRAME_RATE, threshold=0.5)


def test_overlapping_reference_segments_are_accepted():
    # sed_scores_eval rejects touching events; the metrics merge them first.
    pair = _pair("p", np.r_[np.zeros(10), np.ones(20), np.zeros(10)], [(1.0, 2.0), (1.5, 3.0)])
    assert psds([pair], frame_rate=FRAME_RATE) > 0.99


def test_random_scores_are_seeded_and_shaped():
    first = random_scores(n_audio=3, n_captions=4, n_frames=[5, 7], seed=1)
    again = random_scores(n_audio=3, n_captions=4, n_frames=[5, 7], seed=1)
    assert first.similarity.shape == (3, 4)
    assert [a.shape for a in first.activations] == [(5,), (7,)]
    np.testing.assert_array_equal(first.similarity, again.similarity)
    assert not np.array_equal(first.similarity, random_scores(n_audio=3, n_captions=4, n_frames=[], seed=2).similarity)
