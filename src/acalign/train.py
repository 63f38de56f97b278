"""Training with Lightning: the config, the LightningModule and DataModule, and :func:`train`.

``train(config, data_dir, run_dir)`` writes::

    RUN_DIR/config.yaml            the full resolved TrainConfig
    RUN_DIR/checkpoints/last.ckpt  the latest state (``resume=True`` continues from it)
    RUN_DIR/checkpoints/best-*.ckpt  the best by ``config.val_metric``
    RUN_DIR/logs/csv/metrics.csv   CSV log; RUN_DIR/logs/tensorboard/ TensorBoard events
    RUN_DIR/model/                 the exported best model (see acalign.models.export)

Losses: ``triplet`` (the paper's), ``infonce`` (symmetric, learnable temperature) and ``bce``
(the supervised upper bound: per annotated phrase, its frame activation — the mean over the
phrase's words of the frame-word similarity — becomes a logit ``scale * activation + bias`` with
learnable ``scale``/``bias``, trained with frame-level BCE against the phrase's strong labels).

Validation is deterministic: the loader is not shuffled, dropout is off, and the triplet
impostors come from a generator re-seeded at the start of every validation. The retrieval
metrics (``val/t2a_mAP@10``, ``val/t2a_R@k``, ``val/a2t_R@k``) come from one score matrix of
every validation clip against every validation caption. The training split is never re-scored.

Several GPUs or nodes: pass Lightning's flags (``accelerator``, ``devices``, ``num_nodes``,
``strategy``) in ``trainer_overrides``; nothing else changes. Each rank draws its training
batches through a DistributedSampler; in-batch negatives of the contrastive losses are the
rank's own batch (no cross-rank gather; with batch 32 per rank each pair still sees 31
negatives). Every rank runs the whole (small) validation split, so validation metrics, the LR
schedule and early stopping agree on all ranks without any collective.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from acalign.config import (
    MAX_SEED,
    atomic_write_text,
    atomic_write_yaml,
    from_dict,
    load_yaml,
    require_directory_path,
    to_dict,
)
from acalign.data.dataset import Batch, CaptionDataset, ClipDataset, Collate
from acalign.data.manifest import Manifest, read_manifest
from acalign.errors import AcalignError
from acalign.models.aligner import Aligner, AlignerConfig
from acalign.models.losses import LogitScale, frame_bce_loss, info_nce_loss, triplet_ranking_loss
from acalign.runtime import cpu_has_native_bf16, limit_malloc_retention, tune_malloc

log = logging.getLogger(__name__)


class _DropLightningTips(logging.Filter):
    """Drop Lightning's product tips ("💡 Tip: ... try installing litlogger"): advertising,
    not information about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡")


def _tidy_lightning_logging() -> None:
    """Print each of Lightning's messages once.

    The top-level ``lightning`` package gives its logger a console handler of its own and still
    lets records propagate, while ``lightning.pytorch`` leaves them to the root logger when that
    has handlers (our CLI's, or a user's ``logging.basicConfig``): every message came out twice.
    Where the root logger has handlers, Lightning's own console handler is dropped.
    """
    import lightning

    if logging.getLogger().hasHandlers():
        console = getattr(lightning, "_console", None)
        if console is not None:
            logging.getLogger("lightning").removeHandler(console)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLightningTips())


LOSSES = ("triplet", "infonce", "bce")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
RETRIEVAL_METRICS = (
    "t2a_R@1",
    "t2a_R@5",
    "t2a_R@10",
    "t2a_mAP@10",
    "a2t_R@1",
    "a2t_R@5",
    "a2t_R@10",
    "a2t_mAP@10",
)
VAL_METRICS = ("val/loss", *(f"val/{name}" for name in RETRIEVAL_METRICS))
BUNDLED_CONFIGS = ("paper", "default", "supervised")
#: Where bundled configs are looked up: the source checkout's configs/, then package data.
CONFIG_DIRS = (Path(__file__).resolve().parent / "configs",)
#: Settings a resumed run may change; anything else must match the saved config.yaml.
RESUMABLE_CHANGES = (
    "max_epochs", "max_minutes", "num_workers", "num_threads", "patience", "log_every_n_steps",
    "tune_malloc", "low_memory",
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``RUN_DIR/config.yaml``).

    Attributes:
        model: the aligner (audio CRNN, text encoder spec, reduction).
        loss: ``"triplet"`` (paper), ``"infonce"`` or ``"bce"`` (supervised upper bound).
        margin: triplet hinge margin.
        logit_scale: initial inverse temperature of InfoNCE (learnable).
        bce_scale, bce_bias: initial logit ``scale * activation + bias`` of the BCE bound
            (learnable; 10 and -5 put activation 0.5 at probability 0.5).
        lr, weight_decay: Adam.
        batch_size: pairs per training batch (clips per validation batch).
        max_epochs: epoch limit.
        max_minutes: wall-clock budget (Lightning's ``max_time``); None = none.
        patience: early-stopping patience in epochs on ``val_metric``; None = off.
        plateau_factor, plateau_patience: ReduceLROnPlateau on ``val_metric``.
        val_metric: metric that selects the best checkpoint, drives the LR schedule and early
            stopping; ``val/loss`` is minimised, retrieval metrics maximised.
        precision: Lightning precision, e.g. ``"32"`` or ``"bf16-mixed"``; ``"auto"`` takes
            bf16-mixed where the hardware computes bf16 natively (a GPU that supports it, a CPU
            with AVX-512 BF16 or AMX) and 32 elsewhere (see :func:`resolve_precision`).
        channels_last: run the CRNN's convolutions in channels-last memory format.
        compile: ``torch.compile`` the audio encoder.
        num_workers: DataLoader worker processes.
        num_threads: torch intra-op threads for training; None = torch's default (all cores).
            On a machine shared with other jobs 1 can beat 2 by far (threads spin-wait on each
            other when descheduled).
        seed: seeds model init, shuffling, dropout and workers.
        train_split, val_split: manifest names under the data directory.
        clean_captions: clean captions (acalign.data.captions) before training.
        tune_malloc: raise glibc's malloc thresholds in the training process (see
            :func:`tune_malloc`): fastest; freed memory is kept for reuse.
        low_memory: instead, return freed buffers to the OS at once (see
            :func:`acalign.runtime.limit_malloc_retention`), recompute block 1's conv output in
            the backward instead of keeping it (``CRNN.recompute_first_block``) and encode the
            captions of a frozen text encoder in a child process. fp32 on 2 AVX2 cores, paper
            config (medians of 3 runs): peak 1517 → 968 MiB, 16.4 → 11.8 clips/s. Overrides
            ``tune_malloc``.
        grad_clip: gradient-norm clipping; None = off.
        log_every_n_steps: training-loss logging interval.
    """

    model: AlignerConfig = field(default_factory=AlignerConfig)
    loss: str = "triplet"
    margin: float = 1.0
    logit_scale: float = 1 / 0.07
    bce_scale: float = 10.0
    bce_bias: float = -5.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 100
    max_minutes: float | None = None
    patience: int | None = None
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    val_metric: str = "val/loss"
    precision: str = "32"
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 0
    num_threads: int | None = None
    seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    clean_captions: bool = True
    tune_malloc: bool = True
    low_memory: bool = False
    grad_clip: float | None = None
    log_every_n_steps: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = from_dict(AlignerConfig, self.model, source="model")
        self.precision = str(self.precision)

    def validate(self, *, source: str = "train config") -> None:
        """Raise :class:`AcalignError` naming ``source`` and the first bad value."""
        checks = [
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (self.val_metric in VAL_METRICS, f"val_metric must be one of {', '.join(VAL_METRICS)}, got {self.val_metric!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (0 < self.plateau_factor < 1, f"plateau_factor must be in (0, 1), got {self.plateau_factor}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1 or null, got {self.num_threads}"),
            (self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be positive, got {self.max_minutes}"),
            (self.patience is None or self.patience >= 1, f"patience must be >= 1 or null, got {self.patience}"),
            (self.logit_scale > 0, f"logit_scale must be positive, got {self.logit_scale}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AcalignError(f"{source}: {message}")

    @property
    def val_mode(self) -> str:
        """``"min"`` for the loss, ``"max"`` for retrieval metrics."""
        return "min" if self.val_metric == "val/loss" else "max"


# --------------------------------------------------------------------------- config handling


def config_path(name_or_path: str | os.PathLike) -> Path:
    """Resolve a config argument: an existing file, or a bundled name (paper|default|supervised)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in BUNDLED_CONFIGS:
        for folder in CONFIG_DIRS:
            bundled = folder / f"{name_or_path}.yaml"
            if bundled.is_file():
                return bundled
    raise AcalignError(
        f"{name_or_path}: config file not found (give a YAML file or one of {', '.join(BUNDLED_CONFIGS)})"
    )


def parse_key_values(items: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """Parse ``["key=value", ...]`` into a dict; values are read as YAML (``3``, ``null``, ``[1, 2]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise AcalignError(f"{source}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise AcalignError(f"{source}: cannot read the value of {item!r}") from None
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``overrides`` (``model.reduction``) applied."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise AcalignError(f"--set {dotted}: {part!r} is not a section")
            node = child
        node[leaf] = value
    return result


def resolve_config(
    config: str | os.PathLike | dict[str, Any],
    *,
    sets: Sequence[str] = (),
    seed: int | None = None,
    max_epochs: int | None = None,
    max_minutes: float | None = None,
    word2vec: str | os.PathLike | None = None,
) -> TrainConfig:
    """Build a validated :class:`TrainConfig` from a file/bundled name/dict plus CLI overrides.

    Args:
        config: YAML path, bundled name, or an already-read dict.
        sets: ``key=value`` overrides (dotted keys for nested values).
        seed, max_epochs, max_minutes: override those fields when given.
        word2vec: a word2vec/GloVe file to use as the frozen text encoder (the paper's setting).

    Raises:
        AcalignError: unreadable file, unknown key, or invalid value — one line naming the source.
    """
    if isinstance(config, dict):
        raw, source = copy.deepcopy(config), "config"
    else:
        path = config_path(config)
        raw, source = load_yaml(path), str(path)
    given = [(f"--set {item}", parse_key_values([item])) for item in sets]
    for name, flag, value in (("seed", "--seed", seed), ("max_epochs", "--max-epochs", max_epochs),
                              ("max_minutes", "--max-time", max_minutes)):
        if value is not None:
            given.append((f"{flag} {value}", {name: value}))
    if word2vec is not None:
        if not Path(word2vec).is_file():
            raise AcalignError(f"{word2vec}: word2vec file not found")
        text = {"kind": "word2vec", "path": str(Path(word2vec).resolve())}
        given.append((f"--word2vec {word2vec}", {"model.text": text}))
    overrides = {key: value for _, single in given for key, value in single.items()}
    try:
        return _validated_config(apply_overrides(raw, overrides), source)
    except AcalignError:
        if not given or not _is_valid_config(raw, source):
            raise
    # The file alone is fine, so an option is to blame: name the first that fails on its own,
    # or all of them when only their combination fails.
    for description, single in given:
        _validated_config(apply_overrides(raw, single), description)
    return _validated_config(apply_overrides(raw, overrides), ", ".join(d for d, _ in given))


def _validated_config(raw: dict[str, Any], source: str) -> TrainConfig:
    try:
        result = from_dict(TrainConfig, raw, source=source)
    except TypeError as exc:
        raise AcalignError(f"{source}: {exc}") from None
    result.validate(source=source)
    return result


def _is_valid_config(raw: dict[str, Any], source: str) -> bool:
    try:
        _validated_config(raw, source)
    except AcalignError:
        return False
    return True


# --------------------------------------------------------------------------- data


def read_split(data_dir: Path, split: str, *, clean: bool) -> Manifest:
    """Read ``DATA/{split}.json`` and clean its captions (spans stay valid)."""
    manifest = read_manifest(data_dir / f"{split}.json")
    if clean:
        from acalign.data.captions import clean_manifest

        manifest = clean_manifest(manifest)
    return manifest


def feature_store_path(data_dir: Path, split: str) -> Path:
    """``DATA/features/{split}.h5``, or :class:`AcalignError` if it is missing."""
    path = data_dir / "features" / f"{split}.h5"
    if not path.is_file():
        raise AcalignError(f"{path}: feature store not found (run `acalign features {data_dir}` first)")
    return path


class AlignDataModule(pl.LightningDataModule):
    """Training pairs (one item per caption, shuffled) and validation clips (all captions each).

    Manifests are read and cleaned at construction (the vocabulary and text cache need the
    tokens before the model exists); datasets stream features from the HDF5 stores.
    """

    def __init__(self, data_dir: str | os.PathLike, *, config: TrainConfig) -> None:
        """Read the train and validation manifests of ``data_dir``."""
        super().__init__()
        self.data_dir = Path(data_dir)
        self.config = config
        if not self.data_dir.is_dir():
            raise AcalignError(f"{self.data_dir}: data directory not found")
        self.train_manifest = read_split(self.data_dir, config.train_split, clean=config.clean_captions)
        self.val_manifest = read_split(self.data_dir, config.val_split, clean=config.clean_captions)
        with_targets = config.loss == "bce"
        self.train_set = CaptionDataset(
            self.train_manifest, feature_store_path(self.data_dir, config.train_split), with_targets=with_targets
        )
        self.val_set = ClipDataset(
            self.val_manifest, feature_store_path(self.data_dir, config.val_split), with_targets=with_targets
        )
        for dataset in (self.train_set, self.val_set):
            dataset.check_features()
        self.feature_config = self.train_set.feature_config
        self.collate = Collate(pad_value=self.train_set.pad_value)

    @property
    def val_tokens(self) -> list[list[str]]:
        """Validation captions' tokens in manifest caption order."""
        return [list(caption.tokens) for _, caption in self.val_manifest.captions()]

    @property
    def val_caption_clip(self) -> torch.Tensor:
        """``(N_captions,)`` clip position of each validation caption."""
        return torch.tensor(
            [ci for ci, clip in enumerate(self.val_manifest.clips) for _ in clip.captions], dtype=torch.long
        )

    @property
    def train_tokens(self) -> list[list[str]]:
        """Training captions' tokens in manifest caption order."""
        return [list(caption.tokens) for _, caption in self.train_manifest.captions()]

    def train_dataloader(self) -> DataLoader:
        """Shuffled caption pairs; a DistributedSampler shards them when several ranks train."""
        world = self.trainer.world_size if self.trainer is not None else 1
        sampler = None
        if world > 1:
            sampler = DistributedSampler(
                self.train_set, num_replicas=world, rank=self.trainer.global_rank, shuffle=True, seed=self.config.seed
            )
        return self._loader(self.train_set, shuffle=sampler is None, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        """Every validation clip in manifest order, on every rank (see the module docstring)."""
        return self._loader(self.val_set, shuffle=False, sampler=None)

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        """Lightning's move, except ``lengths`` and ``pair_clip``: the encoder and the losses
        read them on the host, so a GPU step never waits for the device to answer a question."""
        lengths, pair_clip = batch.lengths, batch.pair_clip
        moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        moved.lengths, moved.pair_clip = lengths, pair_clip
        return moved

    def _on_gpu(self) -> bool:
        """Whether the trainer runs on CUDA devices (then batches come from pinned memory)."""
        strategy = getattr(self.trainer, "strategy", None)
        return strategy is not None and strategy.root_device.type == "cuda"

    def _loader(self, dataset: Any, *, shuffle: bool, sampler: Any) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.collate,
            pin_memory=self._on_gpu(),
            persistent_workers=workers > 0,
        )


# --------------------------------------------------------------------------- metrics


def flat_retrieval_metrics(scores: torch.Tensor, caption_clip: torch.Tensor) -> dict[str, float]:
    """:func:`acalign.metrics.retrieval_metrics` flattened to ``{"t2a_R@1", ..., "a2t_mAP@10"}``.

    Args:
        scores: ``(Na, Nq)`` score of every clip with every caption.
        caption_clip: ``(Nq,)`` the clip each caption describes.
    """
    from acalign.metrics import retrieval_metrics

    nested = retrieval_metrics(scores.float().cpu().numpy(), caption_to_audio=caption_clip.cpu().numpy())
    prefixes = {"text_to_audio": "t2a", "audio_to_text": "a2t"}
    return {f"{prefixes[d]}_{name}": value for d, values in nested.items() for name, value in values.items()}


# --------------------------------------------------------------------------- the module


class AlignModule(pl.LightningModule):
    """Trains an :class:`Aligner` with the configured loss; validates deterministically.

    Args:
        aligner: the model being trained (exported at the end).
        config: the training config.
    """

    def __init__(self, aligner: Aligner, config: TrainConfig) -> None:
        super().__init__()
        self.aligner = aligner
        self.config = config
        self.logit_scale = LogitScale(config.logit_scale) if config.loss == "infonce" else None
        if config.loss == "bce":
            self.bce_scale = nn.Parameter(torch.tensor(float(config.bce_scale)))
            self.bce_bias = nn.Parameter(torch.tensor(float(config.bce_bias)))
        self._val_text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._val_rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_generator: torch.Generator | None = None

    # ---- shared pieces

    def _pair_loss(self, scores: torch.Tensor, batch: Batch, generator: torch.Generator | None) -> torch.Tensor:
        """Loss of ``scores (B_clips, N)`` for the batch's captions: row ``i`` = caption ``i``'s clip."""
        square = scores[batch.caption_clip]  # (N, N): audio of pair i against caption j
        clip_ids = batch.pair_clip if batch.pair_clip is not None else batch.clip_index[batch.caption_clip]
        if self.config.loss == "infonce":
            return info_nce_loss(square, clip_ids, logit_scale=self.logit_scale())
        return triplet_ranking_loss(square, clip_ids, margin=self.config.margin, generator=generator)

    def phrase_logits(
        self, audio: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """``(P, T)`` logits ``scale * activation + bias`` of each annotated phrase of the batch.

        The activation is :meth:`Aligner.phrase_activation` with ``"mean"``: the mean over the
        phrase's words of the frame-word similarity, vectorised over phrases.
        """
        caption_rows = batch.phrase_caption.to(audio.device)
        audio_rows = batch.caption_clip.to(audio.device)[caption_rows]
        sim = self.aligner.frame_word_similarity(audio[audio_rows], text[caption_rows])  # (P, T, W)
        span_mask = torch.zeros(sim.shape[0], sim.shape[2], device=sim.device, dtype=sim.dtype)
        for row, (start, end) in enumerate(batch.phrase_spans):
            span_mask[row, start:end] = 1.0
        span_mask = span_mask * text_mask[caption_rows].to(sim.dtype)
        activation = (sim * span_mask[:, None, :]).sum(-1) / span_mask.sum(-1, keepdim=True).clamp_min(1)
        return self.bce_scale * activation + self.bce_bias

    def _bce_loss(self, audio: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, batch: Batch) -> torch.Tensor:
        if not batch.phrase_spans:
            return audio.sum() * 0.0  # no annotated phrase in this batch
        logits = self.phrase_logits(audio, text, text_mask, batch)
        audio_rows = batch.caption_clip[batch.phrase_caption]
        return frame_bce_loss(torch.sigmoid(logits), batch.phrase_targets, batch.mask[audio_rows])

    # ---- training

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss over the batch's pairs."""
        audio, audio_mask = self.aligner.encode_audio(batch.features, batch.lengths)
        text, text_mask = self.aligner.encode_text(batch.tokens)
        if self.config.loss == "bce":
            loss = self._bce_loss(audio, text, text_mask, batch)
        else:
            scores = self.aligner.score_matrix(audio, audio_mask, text, text_mask, max_elements=1 << 62)
            loss = self._pair_loss(scores, batch, None)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch.n_captions)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam plus ReduceLROnPlateau on the validation metric."""
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=self.config.val_mode,
            factor=self.config.plateau_factor,
            patience=self.config.plateau_patience,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.config.val_metric, "interval": "epoch"},
        }

    def on_fit_start(self) -> None:
        """Encode every caption of a frozen text encoder once (its cache), not every step."""
        datamodule = self.trainer.datamodule
        if datamodule is not None and not getattr(self.aligner.text_encoder, "trainable", True):
            self.aligner.text_encoder.precompute(
                datamodule.train_tokens + datamodule.val_tokens, separate_process=self.config.low_memory
            )
            # Every caption of the run is cached now: the model behind the cache can go.
            self.aligner.text_encoder.release()

    # ---- validation

    def on_validation_epoch_start(self) -> None:
        """Encode all validation captions once; re-seed the impostor generator."""
        datamodule = self.trainer.datamodule
        self._val_generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self._val_rows = []
        self._val_text = encode_captions(self.aligner, datamodule.val_tokens)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Score the batch's clips against every validation caption; log the batch's loss."""
        assert self._val_text is not None  # set in on_validation_epoch_start
        text, text_mask = self._val_text
        audio, audio_mask = self.aligner.encode_audio(batch.features, batch.lengths)
        # float32 scores: bf16 (3 significant digits) would tie many of the 1000s of candidates
        with torch.autocast(device_type=self.device.type, enabled=False):
            rows = self.aligner.score_matrix(audio.float(), audio_mask, text.float(), text_mask)  # (B, N_val)
        self._val_rows.append((batch.clip_index.cpu(), rows.float().cpu()))
        caption_index = batch.caption_index.to(rows.device)
        if self.config.loss == "bce":
            loss = self._bce_loss(audio, text[caption_index], text_mask[caption_index], batch)
        else:
            loss = self._pair_loss(rows[:, caption_index], batch, self._val_generator)
        self.log("val/loss", loss, on_epoch=True, batch_size=batch.n_captions)

    def on_validation_epoch_end(self) -> None:
        """Retrieval metrics over the clips validated (the whole split unless limited)."""
        if not self._val_rows or self.trainer.sanity_checking:
            return
        datamodule = self.trainer.datamodule
        clip_index = torch.cat([c for c, _ in self._val_rows])
        rows = torch.cat([r for _, r in self._val_rows])
        caption_clip = datamodule.val_caption_clip
        seen = torch.zeros(len(datamodule.val_manifest.clips), dtype=torch.bool)
        seen[clip_index] = True
        keep = seen[caption_clip]
        order = torch.argsort(clip_index)
        position = torch.full((len(seen),), -1, dtype=torch.long)
        position[clip_index[order]] = torch.arange(len(order))
        scores = rows[order][:, keep]
        metrics = flat_retrieval_metrics(scores, position[caption_clip[keep]])
        headline = metrics.pop("t2a_mAP@10")
        self.log("val/t2a_mAP@10", headline, prog_bar=True)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()})
        self._val_rows = []
        self._val_text = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the training config and text encoder spec inside every checkpoint."""
        checkpoint["acalign"] = {
            "train_config": to_dict(self.config),
            "text_encoder": self.aligner.text_encoder.spec(),
        }


@torch.no_grad()
def encode_captions(
    aligner: Aligner, tokens: Sequence[Sequence[str]], *, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode many captions in chunks → ``(emb (N, W, D), mask (N, W))``, W = longest caption."""
    parts = [aligner.encode_text(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)]
    width = max(p[0].shape[1] for p in parts)
    emb = torch.cat([nn.functional.pad(e, (0, 0, 0, width - e.shape[1])) for e, _ in parts])
    mask = torch.cat([nn.functional.pad(m, (0, width - m.shape[1])) for _, m in parts])
    return emb, mask


class EpochThroughput(Callback):
    """Logs ``train/clips_per_s``: training pairs per second of each epoch, validation excluded."""

    def __init__(self) -> None:
        self._start = 0.0
        self._last = 0.0
        self._clips = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch's clock."""
        self._start = self._last = time.perf_counter()
        self._clips = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """Count the batch's pairs."""
        self._clips += batch.n_captions
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log pairs per second over the epoch's batches."""
        if self._clips and self._last > self._start:
            rate = self._clips / (self._last - self._start)
            pl_module.log("train/clips_per_s", rate, prog_bar=False)


# --------------------------------------------------------------------------- entry point


def build_model(config: TrainConfig, datamodule: AlignDataModule) -> Aligner:
    """Build the aligner; word2vec/learned text encoders use the training vocabulary."""
    from acalign.data.captions import Vocabulary
    from acalign.text import build_text_encoder

    model_config = copy.deepcopy(config.model)
    if model_config.audio.n_mels != datamodule.feature_config.n_mels:
        raise AcalignError(
            f"model.audio.n_mels is {model_config.audio.n_mels} but the features of "
            f"{datamodule.data_dir} have {datamodule.feature_config.n_mels} mel bands"
        )
    vocabulary = Vocabulary.from_manifest(datamodule.train_manifest)
    text_encoder = build_text_encoder(dict(model_config.text), vocabulary=vocabulary)
    aligner = Aligner(model_config, text_encoder=text_encoder)
    if config.channels_last:
        aligner.audio_encoder.to(memory_format=torch.channels_last)
    aligner.audio_encoder.recompute_first_block = config.low_memory
    return aligner


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """The Lightning precision to train with: ``precision`` itself unless it is ``"auto"``.

    ``"auto"`` gives ``"bf16-mixed"`` on a CUDA GPU that supports bf16 and on a CPU that
    computes it natively, else ``"32"``: on AVX2-only CPUs bf16 is emulated and ~10× slower.
    """
    if precision != "auto":
        return precision
    accelerator = str(accelerator or "auto").lower()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32"
    if accelerator in ("auto", "cpu"):
        return "bf16-mixed" if cpu_has_native_bf16() else "32"
    return "32"


def build_trainer(config: TrainConfig, run_dir: Path, overrides: dict[str, Any] | None = None) -> pl.Trainer:
    """A Trainer with checkpoints, early stopping, LR monitor and CSV + TensorBoard loggers."""
    monitor, mode = config.val_metric, config.val_mode
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-epoch{epoch:03d}",
        auto_insert_metric_name=False,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
    )
    # Lightning >= 2.5 refreshes save_last only when a top-k checkpoint was saved, so a run
    # killed after epochs without improvement would resume from far back; a second callback
    # "monitoring" the step writes last.ckpt after every epoch (after `best`, so it holds
    # the best-checkpoint bookkeeping too).
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        monitor="step",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [best, last, LearningRateMonitor(logging_interval="epoch"), EpochThroughput()]
    if config.patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=config.patience))
    overrides = dict(overrides or {})
    precision = resolve_precision(config.precision, overrides.get("accelerator", "auto"))
    if precision != config.precision:
        log.info("precision %s resolved to %s on this hardware", config.precision, precision)
    kwargs: dict[str, Any] = {
        "default_root_dir": str(run_dir),
        "max_epochs": config.max_epochs,
        "max_time": timedelta(minutes=config.max_minutes) if config.max_minutes else None,
        "precision": precision,
        "callbacks": callbacks,
        "logger": [
            CSVLogger(str(run_dir), name="logs", version="csv"),
            TensorBoardLogger(str(run_dir), name="logs", version="tensorboard"),
        ],
        "deterministic": "warn",
        "log_every_n_steps": config.log_every_n_steps,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,  # the DataModule shards training itself
        "gradient_clip_val": config.grad_clip,
    }
    kwargs.update(overrides)
    if not overrides:
        return pl.Trainer(**kwargs)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(**kwargs)
    except (TypeError, ValueError, MisconfigurationException) as exc:
        # Lightning checks these options itself; its message is the one to show, on one line.
        options = ", ".join(f"{key}={value!r}" for key, value in overrides.items())
        reason = " ".join(str(exc).split())
        raise AcalignError(f"Lightning Trainer options {options}: {reason}") from None


def _check_run_dir(config: TrainConfig, run_dir: Path, *, resume: bool) -> Path | None:
    """Return the checkpoint to resume from (or None); refuse to overwrite or mix runs."""
    require_directory_path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not resume:
        if last.is_file():
            raise AcalignError(f"{run_dir}: already holds a training run; pass --resume or choose another --out")
        return None
    if not last.is_file():
        raise AcalignError(f"{last}: no checkpoint to resume from")
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = load_yaml(saved_path)
        current = to_dict(config)
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
        if changed:
            raise AcalignError(
                f"{saved_path}: the resumed run was trained with different {', '.join(changed)}; "
                "resume with the same config"
            )
    return last


def train(
    config: TrainConfig,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    trainer_overrides: dict[str, Any] | None = None,
) -> Path:
    """Train, keep the best checkpoint by ``config.val_metric``, and export it.

    Args:
        config: the run's config (validated here).
        data_dir: holds ``{train,val}.json`` and ``features/{train,val}.h5``.
        out_dir: the run directory (see the module docstring for its layout).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (epoch, step, optimizer, LR
            schedule, early stopping and time budget all continue).
        trainer_overrides: extra ``lightning.Trainer`` arguments (``accelerator``, ``devices``,
            ``num_nodes``, ``strategy``, ``limit_train_batches``, ...).

    Returns:
        ``out_dir/model``, the exported model directory.

    Raises:
        AcalignError: bad config, missing data or features, a run directory that already holds
            another run, or nothing to resume.
    """
    config.validate()
    run_dir = Path(out_dir)
    ckpt_path = _check_run_dir(config, run_dir, resume=resume)
    if config.low_memory:
        limit_malloc_retention()
    elif config.tune_malloc:
        tune_malloc(trim_threshold_mb=1024)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = AlignDataModule(data_dir, config=config)
    aligner = build_model(config, datamodule)
    module = AlignModule(aligner, config)
    if config.compile:
        aligner.audio_encoder.compile()
    _tidy_lightning_logging()
    trainer = build_trainer(config, run_dir, trainer_overrides)
    if trainer.is_global_zero:
        atomic_write_yaml(run_dir / "config.yaml", to_dict(config))
    csv_log = run_dir / "logs" / "csv" / "metrics.csv"
    if ckpt_path is not None and trainer.is_global_zero:
        _stash_csv(csv_log)
    with warnings.catch_warnings():
        # Lightning's own use of a class torch deprecated; nothing our users can act on.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if trainer.is_global_zero:
        _unstash_csv(csv_log)
    model_dir = run_dir / "model"
    if trainer.is_global_zero:
        export_best(module, trainer, datamodule, model_dir)
    trainer.strategy.barrier("acalign-export")
    return model_dir


def _stash_csv(path: Path) -> None:
    """Before a resume: move the CSV log's rows aside (Lightning's CSVLogger would delete them)."""
    if path.is_file():
        _write_csv_rows(_stash_path(path), _read_csv_rows(_stash_path(path)) + _read_csv_rows(path))
        path.unlink()


def _unstash_csv(path: Path) -> None:
    """After a resume: put the earlier rows back in front of the resumed run's rows."""
    stash = _stash_path(path)
    if stash.is_file():
        _write_csv_rows(path, _read_csv_rows(stash) + _read_csv_rows(path))
        stash.unlink()


def _stash_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.before-resume.csv")


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv_rows(path: Path, rows: list[dict[str, str]]) -> None:
    columns = sorted({key for row in rows for key in row})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def export_best(module: AlignModule, trainer: pl.Trainer, datamodule: AlignDataModule, model_dir: Path) -> Path:
    """Load the best checkpoint's weights into ``module`` and export its aligner."""
    from acalign.models.export import InferenceConfig, save_exported

    callback = trainer.checkpoint_callback
    best_path = Path(callback.best_model_path) if callback and callback.best_model_path else None
    if best_path is None or not best_path.is_file():
        best_path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        if not best_path.is_file():
            raise AcalignError(f"{trainer.default_root_dir}: training saved no checkpoint to export")
        log.warning("no best checkpoint by %s; exporting %s", module.config.val_metric, best_path)
    checkpoint = torch.load(best_path, map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    inference = InferenceConfig()
    extra: dict[str, Any] = {
        "checkpoint": best_path.name,
        "epoch": int(checkpoint.get("epoch", -1)),
        "global_step": int(checkpoint.get("global_step", -1)),
        "val_metric": module.config.val_metric,
        "best_score": _best_score(callback),
        "loss": module.config.loss,
    }
    if module.config.loss == "bce":
        scale, bias = float(module.bce_scale.detach()), float(module.bce_bias.detach())
        extra["bce_logit"] = {"scale": scale, "bias": bias}
        # the activation where the trained sigmoid crosses 0.5
        inference.threshold = min(max(-bias / scale, 0.0), 1.0) if scale > 0 else 0.5
    return save_exported(
        module.aligner.cpu(), model_dir, feature_config=datamodule.feature_config, inference=inference, extra=extra
    )


def _best_score(callback: ModelCheckpoint | None) -> float | None:
    score = getattr(callback, "best_model_score", None)
    if score is None:
        return None
    value = float(score)
    return value if math.isfinite(value) else None
