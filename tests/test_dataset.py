"""Datasets over a manifest + HDF5 feature store: streaming, padding, frame targets.

``write_tiny_data`` also serves test_train.py and test_export.py (imported from here).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np
import pytest
import torch

from acalign.data.dataset import CaptionDataset, ClipDataset, Collate, phrase_target, segment_frames
from acalign.data.features import FeatureConfig
from acalign.data.manifest import Phrase, Segment, read_manifest
from acalign.errors import DataError

SOUNDS = (("a", "dog", "barks"), ("a", "bird", "sings"), ("a", "car", "passes"), ("water", "flows"))
TINY_FEATURES = FeatureConfig(n_mels=16, fmax=8000.0)


def _clip_features(rng: np.random.Generator, n_frames: int, sound: int, span: tuple[int, int]) -> np.ndarray:
    """Background noise at the pad level plus a band pattern for ``sound`` inside ``span``."""
    feats = rng.normal(-15.0, 0.5, size=(n_frames, TINY_FEATURES.n_mels)).astype(np.float32)
    band = slice(4 * sound, 4 * sound + 4)
    feats[span[0] : span[1], band] += 10.0
    return feats


def write_tiny_data(
    root: Path,
    rng: np.random.Generator,
    *,
    n_train: int = 16,
    n_val: int = 6,
    n_frames: int = 50,
    captions_per_val_clip: int = 2,
) -> Path:
    """Write ``root/{train,val}.json`` (v2) and ``root/features/{train,val}.h5`` of tiny clips.

    Each clip holds one sound from :data:`SOUNDS` in a random stretch; its caption(s) name that
    sound, with the phrase annotated by that stretch. Val clips have shorter, varied lengths.
    """
    rate = TINY_FEATURES.frame_rate
    (root / "features").mkdir(parents=True, exist_ok=True)
    for split, n_clips, n_caps in (("train", n_train, 1), ("val", n_val, captions_per_val_clip)):
        items = []
        with h5py.File(root / "features" / f"{split}.h5", "w") as h5:
            h5.attrs["feature_config"] = TINY_FEATURES.to_json()
            clips = h5.create_group("clips")
            for i in range(n_clips):
                frames = n_frames if split == "train" else int(rng.integers(n_frames // 2, n_frames + 1))
                sound = i % len(SOUNDS)
                start = int(rng.integers(0, frames // 2))
                stop = int(rng.integers(start + 4, frames))
                audio_id = f"{split}/clip {i:02d}.wav"  # a '/' and a space: ids are percent-encoded
                clips.create_dataset(quote(audio_id, safe=""), data=_clip_features(rng, frames, sound, (start, stop)))
                words = list(SOUNDS[sound])
                for k in range(n_caps):
                    tokens = ["we", "hear", *words] if k % 2 else [*words, "loudly"]
                    first = 2 if k % 2 else 0
                    items.append(
                        {
                            "audiocap_id": f"{split}-{i}-{k}",
                            "audio_id": audio_id,
                            "tokens": tokens,
                            "phrases": [
                                {
                                    "phrase": " ".join(words),
                                    "start_index": first,
                                    "end_index": first + len(words) - 1,
                                    "segments": [[start / rate, (stop - 1) / rate]],
                                },
                                {"phrase": tokens[-1], "start_index": len(tokens) - 1, "end_index": len(tokens) - 1, "segments": [[0, 0]]},
                            ]
                            if k % 2 == 0
                            else [
                                {
                                    "phrase": " ".join(words),
                                    "start_index": first,
                                    "end_index": first + len(words) - 1,
                                    "segments": [[start / rate, (stop - 1) / rate]],
                                }
                            ],
                        }
                    )
        (root / f"{split}.json").write_text(json.dumps(items))
    return root


@pytest.fixture
def tiny_data(tmp_path: Path, rng: np.random.Generator) -> Path:
    return write_tiny_data(tmp_path / "data", rng)


def test_segment_frames_uses_frame_centres() -> None:
    # frames at 0, 0.02, 0.04, ... s; [0.02, 0.06] covers frames 1, 2, 3 (boundaries included)
    assert segment_frames(0.02, 0.06, frame_rate=50.0, n_frames=100) == (1, 4)
    assert segment_frames(0.021, 0.059, frame_rate=50.0, n_frames=100) == (2, 3)
    assert segment_frames(1.5, 3.0, frame_rate=50.0, n_frames=100) == (75, 100)  # clipped
    assert segment_frames(5.0, 6.0, frame_rate=50.0, n_frames=100) == (100, 100)  # empty


def test_phrase_target_marks_frames_inside_segments_and_skips_unannotated() -> None:
    phrase = Phrase("a dog", 0, 1, [Segment(0.1, 0.2), Segment(0.5, 0.52)])
    target = phrase_target(phrase, frame_rate=50.0, n_frames=40)
    assert target.dtype == np.float32
    assert np.flatnonzero(target).tolist() == [5, 6, 7, 8, 9, 10, 25, 26]
    absent = Phrase("a dog", 0, 1, [Segment(0.0, 0.0)], annotated=False)
    assert not phrase_target(absent, frame_rate=50.0, n_frames=40).any()


def test_caption_dataset_yields_one_item_per_caption(tiny_data: Path) -> None:
    manifest = read_manifest(tiny_data / "val.json")
    dataset = CaptionDataset(manifest, tiny_data / "features" / "val.h5")
    assert len(dataset) == manifest.n_captions == 12
    item = dataset[3]
    assert item.clip_index == 1 and len(item.captions) == 1
    assert item.captions[0].caption_index == 3
    assert item.features.dtype == torch.float32 and item.features.shape[1] == 16


def test_collate_pads_with_the_feature_pad_value_and_masks(tiny_data: Path) -> None:
    manifest = read_manifest(tiny_data / "val.json")
    dataset = ClipDataset(manifest, tiny_data / "features" / "val.h5")
    items = [dataset[i] for i in range(len(dataset))]
    batch = Collate(pad_value=dataset.pad_value)(items)
    lengths = [int(item.features.shape[0]) for item in items]
    assert len(set(lengths)) > 1, "fixture should give clips of different lengths"
    assert batch.features.shape == (6, max(lengths), 16)
    assert batch.lengths.tolist() == lengths
    assert batch.mask.sum(1).tolist() == lengths
    assert math.isclose(dataset.pad_value, math.log(TINY_FEATURES.log_eps))
    for row, item in enumerate(items):
        n = lengths[row]
        assert torch.equal(batch.features[row, :n], item.features)
        assert torch.all(batch.features[row, n:] == torch.tensor(dataset.pad_value))
    assert batch.n_captions == 12
    assert batch.caption_clip.tolist() == [r for r in range(6) for _ in range(2)]
    assert batch.caption_index.tolist() == list(range(12))
    assert batch.targets is None


def test_supervised_targets_are_one_inside_the_annotated_segments(tiny_data: Path) -> None:
    manifest = read_manifest(tiny_data / "val.json")
    dataset = ClipDataset(manifest, tiny_data / "features" / "val.h5", with_targets=True)
    batch = Collate(pad_value=dataset.pad_value)([dataset[0], dataset[1]])
    # the unannotated [[0, 0]] phrase of each first caption is skipped: one phrase per caption
    assert len(batch.phrase_spans) == batch.n_captions == 4
    assert batch.phrase_spans[0] == (0, 3) and batch.phrase_spans[1] == (2, 5)
    for p, caption_row in enumerate(batch.phrase_caption.tolist()):
        clip = manifest.clips[int(batch.caption_clip[caption_row])]
        caption = clip.captions[caption_row % 2]
        segment = caption.phrases[0].segments[0]
        first, stop = round(segment.onset * 50), round(segment.offset * 50) + 1
        expected = torch.zeros(batch.features.shape[1])
        expected[first:stop] = 1.0
        assert torch.equal(batch.phrase_targets[p], expected)
        assert torch.equal(batch.targets[caption_row], expected)  # union of one phrase
    phrase_clip = batch.caption_clip[batch.phrase_caption]
    assert batch.phrase_targets[~batch.mask[phrase_clip]].sum() == 0  # nothing on padding


def test_dataset_streams_and_survives_pickling_to_workers(tiny_data: Path) -> None:
    manifest = read_manifest(tiny_data / "train.json")
    dataset = CaptionDataset(manifest, tiny_data / "features" / "train.h5")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, collate_fn=Collate(pad_value=dataset.pad_value)
    )
    batches = list(loader)
    assert sum(b.n_clips for b in batches) == 16
    assert batches[0].features.shape == (4, 50, 16)


def test_missing_features_raise_a_one_line_data_error(tiny_data: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_data / "train.json")
    manifest.clips[0].audio_id = "nowhere.wav"
    dataset = CaptionDataset(manifest, tiny_data / "features" / "train.h5")
    with pytest.raises(DataError, match="nowhere.wav") as info:
        dataset.check_features()
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not found"):
        CaptionDataset(manifest, tmp_path / "absent.h5")
