"""Frame boundaries, median filter, thresholding into segments, frame labels."""

from __future__ import annotations

import numpy as np
import pytest

from acalign.errors import AcalignError
from acalign.postprocess import (
    activation_to_segments,
    active_runs,
    frame_boundaries,
    median_filter,
    merge_segments,
    segments_to_frame_labels,
)


def test_frame_boundaries_are_centred_frames_cut_at_zero():
    np.testing.assert_allclose(frame_boundaries(n_frames=3, frame_rate=50.0), [0.0, 0.01, 0.03, 0.05])


def test_activation_to_segments_hand_example():
    activation = np.array([0.0, 1.0, 1.0, 0.0, 0.9, 0.2])
    segments = activation_to_segments(activation, frame_rate=50.0, threshold=0.5)
    np.testing.assert_allclose(segments, [(0.01, 0.05), (0.07, 0.09)])


def test_threshold_is_strict():
    assert activation_to_segments(np.array([0.5, 0.5]), frame_rate=10.0, threshold=0.5) == []


def test_segment_reaching_the_last_frame_ends_at_the_last_boundary():
    segments = activation_to_segments(np.array([0.0, 0.0, 1.0, 1.0]), frame_rate=10.0, threshold=0.5)
    np.testing.assert_allclose(segments, [(0.15, 0.35)])


def test_median_filter_removes_a_one_frame_spike_and_keeps_a_long_event():
    activation = np.zeros(30)
    activation[5] = 1.0
    activation[15:25] = 1.0
    segments = activation_to_segments(activation, frame_rate=10.0, threshold=0.5, median_filter_frames=5)
    np.testing.assert_allclose(segments, [(1.45, 2.45)])


@pytest.mark.parametrize("length", [0, 2, -1, 1.5])
def test_median_filter_rejects_bad_length(length):
    with pytest.raises(AcalignError, match="median filter length"):
        median_filter(np.zeros(5), filter_frames=length)


def test_median_filter_rejects_a_matrix():
    with pytest.raises(AcalignError, match=r"1-D array"):
        median_filter(np.zeros((3, 2)), filter_frames=1)


def test_active_runs():
    starts, stops = active_runs(np.array([True, True, False, True]))
    assert starts.tolist() == [0, 3]
    assert stops.tolist() == [2, 4]


def test_merge_segments_merges_touching_and_overlapping_and_clips():
    merged = merge_segments([(3.0, 4.0), (0.5, 1.0), (1.0, 2.0), (1.5, 2.5), (9.0, 12.0)], end=10.0)
    assert merged == [(0.5, 2.5), (3.0, 4.0), (9.0, 10.0)]


def test_merge_segments_drops_empty():
    assert merge_segments([(2.0, 2.0), (11.0, 12.0)], end=10.0) == []


def test_frame_labels_closed_interval_on_frame_centres():
    # Frames at 0.0, 0.1, ..., 0.9 s; [0.2, 0.5] covers centres 0.2, 0.3, 0.4, 0.5.
    labels = segments_to_frame_labels([(0.2, 0.5)], n_frames=10, frame_rate=10.0)
    assert np.flatnonzero(labels).tolist() == [2, 3, 4, 5]


def test_frame_rate_must_be_positive():
    with pytest.raises(AcalignError, match="frame_rate must be positive"):
        frame_boundaries(n_frames=3, frame_rate=0.0)
