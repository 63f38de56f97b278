"""Torch datasets over a manifest and its HDF5 feature store, and the batch they collate to.

Items stream from the store: each worker process opens the HDF5 file on its first read and
reads one clip at a time, so memory does not grow with the size of the split.

Two views of a split:

* :class:`CaptionDataset` — one item per caption (training: every pair is seen once an epoch;
  a Clotho clip with five captions appears five times);
* :class:`ClipDataset` — one item per clip carrying all its captions (validation: each clip is
  encoded once and scored against every caption of the split).

Both yield :class:`ClipItem`; :class:`Collate` pads them into a :class:`Batch` with the
store's ``FeatureConfig.pad_value`` (the log-mel of digital silence, not 0, which would read as
a loud frame).

Frame-level targets (for the supervised bound and for checks) follow the store's frame clock:
frame ``t`` is centred at ``t / frame_rate`` seconds and is positive when that instant lies in
``[onset, offset]`` of one of the phrase's segments.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from acalign.data.manifest import Caption, Clip, Manifest, Phrase
from acalign.errors import DataError


@dataclass
class CaptionItem:
    """One caption of a clip as the model sees it.

    Attributes:
        tokens: the caption's words.
        caption_index: position of the caption in the manifest's caption order.
        phrase_spans: ``(start, end)`` token spans (``end`` exclusive) of the annotated phrases.
        phrase_targets: ``(P, T)`` float32, 1 on frames inside each annotated phrase's segments.
    """

    tokens: list[str]
    caption_index: int
    phrase_spans: list[tuple[int, int]] = field(default_factory=list)
    phrase_targets: torch.Tensor | None = None


@dataclass
class ClipItem:
    """One clip's features with one or more of its captions.

    Attributes:
        features: ``(T, F)`` float32 log-mel frames.
        clip_index: position of the clip in the manifest.
        captions: the captions paired with these features.
    """

    features: torch.Tensor
    clip_index: int
    captions: list[CaptionItem]


@dataclass
class Batch:
    """A padded batch of clips and the captions paired with them.

    Attributes:
        features: ``(B, T, F)`` float32, padded with the store's pad value.
        lengths: ``(B,)`` int64 valid frames per clip.
        mask: ``(B, T)`` bool, True on valid frames.
        clip_index: ``(B,)`` int64 manifest position of each clip.
        tokens: ``N`` token lists (the text encoder pads them).
        caption_index: ``(N,)`` int64 manifest caption position of each caption.
        caption_clip: ``(N,)`` int64 row in ``features`` that each caption describes.
        pair_clip: ``(N,)`` int64 manifest position of each caption's clip
            (``clip_index[caption_clip]``); training keeps it on the host.
        targets: ``(N, T)`` float32 union of each caption's annotated phrases, or None.
        phrase_caption: ``(P,)`` int64 caption row of each annotated phrase.
        phrase_spans: ``P`` ``(start, end)`` token spans (end exclusive).
        phrase_targets: ``(P, T)`` float32 per-phrase frame targets, or None.
    """

    features: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    clip_index: torch.Tensor
    tokens: list[list[str]]
    caption_index: torch.Tensor
    caption_clip: torch.Tensor
    pair_clip: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    phrase_caption: torch.Tensor | None = None
    phrase_spans: list[tuple[int, int]] = field(default_factory=list)
    phrase_targets: torch.Tensor | None = None

    @property
    def n_clips(self) -> int:
        """Number of clips (rows of ``features``)."""
        return int(self.features.shape[0])

    @property
    def n_captions(self) -> int:
        """Number of captions."""
        return len(self.tokens)


def segment_frames(
    onset: float, offset: float, *, frame_rate: float, n_frames: int
) -> tuple[int, int]:
    """Return the half-open frame range ``[first, stop)`` whose centres lie in ``[onset, offset]``.

    Frame ``t`` is centred at ``t / frame_rate`` seconds (librosa's ``center=True``). A tiny
    tolerance keeps a boundary that falls exactly on a frame centre inside the segment despite
    float rounding. The range is clipped to ``[0, n_frames)``; it may be empty.
    """
    first = math.ceil(onset * frame_rate - 1e-6)
    last = math.floor(offset * frame_rate + 1e-6)
    first = min(max(first, 0), n_frames)
    stop = min(last + 1, n_frames)
    return first, max(first, stop)


def phrase_target(phrase: Phrase, *, frame_rate: float, n_frames: int) -> np.ndarray:
    """Return ``(n_frames,)`` float32: 1 on frames inside the phrase's segments, else 0.

    An unannotated phrase (``[[0, 0]]``) has no events and gives all zeros.
    """
    target = np.zeros(n_frames, dtype=np.float32)
    for segment in phrase.events:
        first, stop = segment_frames(
            segment.onset, segment.offset, frame_rate=frame_rate, n_frames=n_frames
        )
        target[first:stop] = 1.0
    return target


class _ManifestDataset(Dataset):
    """Shared machinery: manifest indexing, lazy store, per-caption targets."""

    def __init__(
        self,
        manifest: Manifest,
        store_path: str | os.PathLike,
        *,
        with_targets: bool = False,
    ) -> None:
        from acalign.data.features import FeatureStore

        self.manifest = manifest
        self.with_targets = with_targets
        # FeatureStore reopens its HDF5 handle in each worker process and reads one clip at a
        # time, so nothing here grows with the split.
        self.store = FeatureStore(store_path)
        self.feature_config = self.store.config
        self.frame_rate = float(self.feature_config.frame_rate)
        self.pad_value = float(self.feature_config.pad_value)
        self._caption_offsets = _caption_offsets(manifest)
        self.store.close()  # forked workers must not inherit an open handle

    def _caption_item(self, clip_pos: int, cap_pos: int, n_frames: int) -> CaptionItem:
        caption: Caption = self.manifest.clips[clip_pos].captions[cap_pos]
        item = CaptionItem(
            tokens=list(caption.tokens),
            caption_index=self._caption_offsets[clip_pos] + cap_pos,
        )
        if self.with_targets:
            annotated = [p for p in caption.phrases if p.annotated]
            item.phrase_spans = [(p.start_index, p.end_index + 1) for p in annotated]
            rows = [phrase_target(p, frame_rate=self.frame_rate, n_frames=n_frames) for p in annotated]
            item.phrase_targets = torch.from_numpy(
                np.stack(rows) if rows else np.zeros((0, n_frames), np.float32)
            )
        return item

    def _features(self, clip: Clip) -> torch.Tensor:
        return torch.from_numpy(self.store[clip.audio_id])

    def check_features(self) -> None:
        """Raise :class:`DataError` if any clip of the manifest is missing from the store."""
        missing = [c.audio_id for c in self.manifest.clips if c.audio_id not in self.store]
        self.store.close()
        if missing:
            raise DataError(
                f"{self.store.path}: {len(missing)} clip(s) of {self.manifest.source} have no "
                f"features, e.g. {missing[0]!r} (re-run `acalign features`)"
            )


def _caption_offsets(manifest: Manifest) -> list[int]:
    """Index of each clip's first caption in the manifest's caption order."""
    offsets, total = [], 0
    for clip in manifest.clips:
        offsets.append(total)
        total += len(clip.captions)
    return offsets


class CaptionDataset(_ManifestDataset):
    """One item per caption: ``ClipItem`` holding the clip's features and that one caption.

    Args:
        manifest: the split's clips and captions.
        store_path: the split's HDF5 feature store.
        with_targets: attach per-phrase frame targets (supervised training).
    """

    def __init__(
        self,
        manifest: Manifest,
        store_path: str | os.PathLike,
        *,
        with_targets: bool = False,
    ) -> None:
        super().__init__(manifest, store_path, with_targets=with_targets)
        self.pairs = [
            (ci, ki) for ci, clip in enumerate(manifest.clips) for ki in range(len(clip.captions))
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> ClipItem:
        clip_pos, cap_pos = self.pairs[index]
        features = self._features(self.manifest.clips[clip_pos])
        caption = self._caption_item(clip_pos, cap_pos, int(features.shape[0]))
        return ClipItem(features=features, clip_index=clip_pos, captions=[caption])


class ClipDataset(_ManifestDataset):
    """One item per clip: ``ClipItem`` holding the clip's features and all its captions.

    Args:
        manifest: the split's clips and captions.
        store_path: the split's HDF5 feature store.
        with_targets: attach per-phrase frame targets.
    """

    def __len__(self) -> int:
        return len(self.manifest.clips)

    def __getitem__(self, index: int) -> ClipItem:
        clip = self.manifest.clips[index]
        features = self._features(clip)
        n_frames = int(features.shape[0])
        captions = [self._caption_item(index, k, n_frames) for k in range(len(clip.captions))]
        return ClipItem(features=features, clip_index=index, captions=captions)


def pad_features(
    features: list[torch.Tensor], *, pad_value: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad ``(T_i, F)`` tensors to ``(B, T_max, F)``.

    Returns:
        ``(padded (B, T_max, F) float32, lengths (B,) int64, mask (B, T_max) bool)``.
    """
    lengths = torch.tensor([int(f.shape[0]) for f in features], dtype=torch.long)
    n_mels = int(features[0].shape[1])
    padded = torch.full((len(features), int(lengths.max()), n_mels), pad_value, dtype=torch.float32)
    for row, feats in enumerate(features):
        padded[row, : feats.shape[0]] = feats
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, lengths, mask


def _pad_rows(rows: list[torch.Tensor], n_frames: int) -> torch.Tensor:
    """Stack ``(T_i,)`` rows into ``(N, n_frames)`` float32, zero beyond each row's length."""
    out = torch.zeros((len(rows), n_frames), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


class Collate:
    """Collate :class:`ClipItem` lists into a :class:`Batch` (a picklable callable for workers).

    Args:
        pad_value: value written into padded frames (the store's log-epsilon).
    """

    def __init__(self, *, pad_value: float) -> None:
        self.pad_value = pad_value

    def __call__(self, items: list[ClipItem]) -> Batch:
        """Pad features, flatten captions, and build frame targets when the items carry them."""
        features, lengths, mask = pad_features(
            [item.features for item in items], pad_value=self.pad_value
        )
        n_frames = int(features.shape[1])
        tokens, caption_index, caption_clip = [], [], []
        unions, phrase_caption, phrase_spans, phrase_rows = [], [], [], []
        with_targets = all(c.phrase_targets is not None for item in items for c in item.captions)
        for row, item in enumerate(items):
            for caption in item.captions:
                caption_row = len(tokens)
                tokens.append(caption.tokens)
                caption_index.append(caption.caption_index)
                caption_clip.append(row)
                if not with_targets:
                    continue
                targets = caption.phrase_targets
                unions.append(
                    targets.amax(dim=0) if targets.shape[0] else torch.zeros(targets.shape[1])
                )
                for span, target in zip(caption.phrase_spans, targets, strict=True):
                    phrase_caption.append(caption_row)
                    phrase_spans.append(span)
                    phrase_rows.append(target)
        batch = Batch(
            features=features,
            lengths=lengths,
            mask=mask,
            clip_index=torch.tensor([item.clip_index for item in items], dtype=torch.long),
            tokens=tokens,
            caption_index=torch.tensor(caption_index, dtype=torch.long),
            caption_clip=torch.tensor(caption_clip, dtype=torch.long),
        )
        batch.pair_clip = batch.clip_index[batch.caption_clip]
        if with_targets:
            batch.targets = _pad_rows(unions, n_frames)
            batch.phrase_caption = torch.tensor(phrase_caption, dtype=torch.long)
            batch.phrase_spans = phrase_spans
            batch.phrase_targets = _pad_rows(phrase_rows, n_frames)
        return batch
