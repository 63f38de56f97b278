"""A trained aligner for users: embed audio and text, score captions, ground phrases in time.

>>> import acalign
>>> model = acalign.load_model("runs/demo/default/model")  # doctest: +SKIP
>>> [r.segments for r in model.ground("street.flac", ["a dog barks"])]  # doctest: +SKIP
[[(2.31, 4.05, 0.62)]]

Audio is a file path (any format libsndfile reads, any rate, mono or multichannel, any length)
or a waveform array with its ``sample_rate``. Long recordings are processed in overlapping
windows with memory independent of length (:mod:`acalign.infer.grounding`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acalign.errors import AcalignError, ModelError
from acalign.infer.grounding import (
    SharedFrontEnd,
    WindowPlan,
    activation_segments,
    array_blocks,
    end_aligned_windows,
    file_blocks,
    iter_shared_frames,
    iter_stitched_frames,
    median_filter_frames,
)

AudioInput = str | os.PathLike | np.ndarray

#: Files whose bytes decide a model's identity (``inference.json`` may change on its own).
_IDENTITY_FILES = ("model.safetensors", "config.yaml", "text_encoder.json", "features.json")


@dataclass(frozen=True)
class GroundingResult:
    """Where one phrase happens in one recording.

    Attributes
    ----------
    phrase : str
        The phrase as given.
    tokens : list[str]
        Its cleaned tokens (what the text encoder saw).
    times : np.ndarray, shape=(T,)
        Time of each frame in seconds (``t / frame_rate``).
    activation : np.ndarray, shape=(T,), float32
        The phrase's frame activation: the mean over its words of ``max(0, cos)``.
    segments : list of (onset, offset, score)
        Detected events in seconds, ``score`` the peak activation inside each.
    """

    phrase: str
    tokens: list[str]
    times: np.ndarray
    activation: np.ndarray
    segments: list[tuple[float, float, float]] = field(default_factory=list)


def load_model(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    bf16: bool = False,
    channels_last: bool = True,
    batch_size: int = 16,
    share_convolutions: bool = True,
) -> AcalignModel:
    """Load an exported model directory (written by training / ``save_exported``).

    Parameters
    ----------
    path : str or os.PathLike
        The model directory (``model.safetensors``, ``config.yaml``, ``features.json``, ...).
    device : str
        Torch device for the encoders.
    bf16 : bool
        Run the audio encoder under bfloat16 autocast (faster on CPUs with AVX-512 BF16/AMX;
        activations then differ from float32 by about 1e-2).
    channels_last : bool
        Keep the convolutions' tensors channels-last (default): faster on CPU in float32 too
        (grounding 60 min on 2 AVX2 cores: 423× instead of 364× real time); results differ
        from the standard layout by float32 rounding only.
    batch_size : int
        Windows encoded per batch for long recordings; the windows of a batch share their
        convolutions, so memory grows with it (16 windows: ~2 min of audio at a time).
    share_convolutions : bool
        Overlapping windows of a long recording share log-mel and the convolutions (default;
        see :mod:`acalign.infer.grounding`). False encodes each window on its own, as before
        this existed: about 20 % slower, the same frames within float32 rounding at the
        convolutions and the BiGRU's edge effects.

    Returns
    -------
    AcalignModel

    Raises
    ------
    ModelError
        The directory is missing, incomplete, or written in another format version.

    Examples
    --------
    >>> model = load_model("runs/demo/default/model")  # doctest: +SKIP
    >>> model.sample_rate, model.frame_rate  # doctest: +SKIP
    (32000, 50.0)
    """
    from acalign.models.export import load_exported

    aligner, meta = load_exported(path, map_location=device)
    return AcalignModel(
        aligner,
        meta,
        device=device,
        bf16=bf16,
        channels_last=channels_last,
        batch_size=batch_size,
        share_convolutions=share_convolutions,
    )


class AcalignModel:
    """An exported aligner ready for users; build it with :func:`load_model`.

    Attributes
    ----------
    path : Path
        The model directory.
    identity : str
        SHA-256 over the weights and configs: indexes built with this model record it.
    sample_rate, frame_rate : int, float
        Input rate audio is resampled to, and embedding frames per second.
    dim : int
        Embedding size ``D``.
    reduction : str
        The clip–caption reduction the model was trained with.
    threshold : float
        Default grounding threshold (chosen on validation).
    median_filter_seconds : float
        Default grounding median filter length.
    window_seconds, overlap_seconds : float
        Window geometry for recordings longer than one window (10 s and 2 s by default).
    batch_size : int
        Windows encoded together (see :func:`load_model`).
    share_convolutions : bool
        Whether overlapping windows share log-mel and the convolutions (see :func:`load_model`).
    """

    def __init__(
        self,
        aligner: Any,
        meta: Any,
        *,
        device: str = "cpu",
        bf16: bool = False,
        channels_last: bool = True,
        batch_size: int = 16,
        share_convolutions: bool = True,
        window_seconds: float = 10.0,
        overlap_seconds: float = 2.0,
    ) -> None:
        """Wrap an eval-mode :class:`~acalign.models.aligner.Aligner` and its export metadata."""
        import torch

        from acalign.data.features import LogMel

        self.aligner = aligner.eval()
        self.meta = meta
        self.path = Path(meta.path).resolve()
        self.feature_config = meta.feature_config
        self.device = torch.device(device)
        self.bf16 = bf16
        self.batch_size = batch_size
        self.share_convolutions = share_convolutions
        self.window_seconds = window_seconds
        self.overlap_seconds = overlap_seconds
        if channels_last:
            # the CRNN switches its input to channels-last when its weights are
            self.aligner.audio_encoder.to(memory_format=torch.channels_last)
        self._log_mel = LogMel(self.feature_config).to(self.device).eval()
        self.identity = _model_identity(self.path)

    # ----------------------------------------------------------------- properties

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) audio is resampled to before features."""
        return int(self.feature_config.sample_rate)

    @property
    def frame_rate(self) -> float:
        """Embedding frames per second (50 for the paper's features)."""
        return float(self.feature_config.frame_rate)

    @property
    def dim(self) -> int:
        """Size ``D`` of the joint embedding space."""
        return int(self.aligner.dim)

    @property
    def reduction(self) -> str:
        """The clip–caption reduction used by :meth:`score` and the search index."""
        return str(self.aligner.config.reduction)

    @property
    def threshold(self) -> float:
        """Default grounding threshold, from the model's ``inference.json``."""
        return float(self.meta.inference.threshold)

    @property
    def median_filter_seconds(self) -> float:
        """Default grounding median filter length, from ``inference.json`` (frames → seconds)."""
        return int(self.meta.inference.median_filter) / self.frame_rate

    def window_plan(self, *, window_seconds: float | None = None) -> WindowPlan:
        """The windows long recordings are cut into (see :mod:`acalign.infer.grounding`)."""
        return WindowPlan.from_seconds(
            window_seconds=window_seconds or self.window_seconds,
            overlap_seconds=self.overlap_seconds,
            sample_rate=self.sample_rate,
            hop_length=int(self.feature_config.hop_length),
        )

    # ----------------------------------------------------------------- text

    def tokenize(self, text: str) -> list[str]:
        """Clean and tokenise a caption or phrase the way training captions were."""
        from acalign.data.captions import clean_caption

        if not isinstance(text, str):
            raise AcalignError(f"a caption must be a string, got {type(text).__name__}")
        return clean_caption(text)

    def embed_text(self, captions: Sequence[str]) -> list[np.ndarray]:
        """Word embeddings of each caption.

        Parameters
        ----------
        captions : sequence of str
            Raw text; cleaned with :meth:`tokenize`.

        Returns
        -------
        list of np.ndarray, shape=(W_i, D), float32
            One L2-normalised vector per cleaned word of caption ``i``.

        Raises
        ------
        AcalignError
            A caption is empty (no word left after cleaning).

        Examples
        --------
        >>> [v.shape for v in model.embed_text(["a dog barks", "rain"])]  # doctest: +SKIP
        [(3, 300), (1, 300)]
        """
        tokens = self._tokens(captions)
        emb, mask = self._encode_tokens(tokens)
        lengths = mask.sum(axis=1)
        return [emb[i, : lengths[i]] for i in range(len(tokens))]

    def _tokens(self, captions: Sequence[str]) -> list[list[str]]:
        if isinstance(captions, str):
            raise AcalignError("captions must be a list of strings, not a single string")
        if len(captions) == 0:
            raise AcalignError("no caption or phrase given")
        tokens = []
        for i, text in enumerate(captions):
            words = self.tokenize(text)
            if not words:
                raise AcalignError(f"phrase {i + 1} ({text!r}) is empty: it has no word")
            tokens.append(words)
        return tokens

    def _encode_tokens(self, tokens: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            emb, mask = self.aligner.encode_text(tokens)
        return emb.float().cpu().numpy(), mask.cpu().numpy()

    # ----------------------------------------------------------------- audio

    def iter_frame_embeddings(
        self, audio: AudioInput, *, sample_rate: int | None = None
    ) -> Iterator[np.ndarray]:
        """Stream frame embeddings of ``audio`` in time order, memory independent of length.

        Yields
        ------
        np.ndarray, shape=(t, D), float32
            Consecutive frames; all together ``1 + n // hop_length`` of them.
        """
        return self._iter_frames(audio, sample_rate=sample_rate, finish=_to_numpy)

    def embed_audio(
        self,
        audio: AudioInput,
        *,
        sample_rate: int | None = None,
        window_seconds: float | None = None,
    ) -> np.ndarray:
        """Frame embeddings of a recording.

        Parameters
        ----------
        audio : path or np.ndarray
            A file, or a waveform ``(n,)`` / ``(channels, n)`` at ``sample_rate``.
        sample_rate : int or None
            Required with an array; ignored for files.
        window_seconds : float or None
            Window length for long recordings (default :attr:`window_seconds`). ``float("inf")``
            encodes the whole recording in one pass (exact, memory grows with length).

        Returns
        -------
        np.ndarray, shape=(T, D), float32
            L2-normalised; frame ``t`` at ``t / frame_rate`` seconds.

        Examples
        --------
        >>> model.embed_audio("clip.wav").shape  # a 10 s clip  # doctest: +SKIP
        (501, 300)
        """
        chunks = self._iter_frames(
            audio, sample_rate=sample_rate, finish=_to_numpy, window_seconds=window_seconds
        )
        return np.concatenate(list(chunks))

    def embed_audio_clip(self, audio: AudioInput, *, sample_rate: int | None = None) -> np.ndarray:
        """One vector for the whole recording: the mean of its frame embeddings (not renormalised).

        Its inner product with the mean of a caption's word vectors equals the ``mean``
        clip–caption score without the ``max(0, ·)`` clamp, so it ranks clips for a caption
        nearly as the exact frame-level score does; the search index uses the same vectors.

        Returns
        -------
        np.ndarray, shape=(D,), float32
        """
        total: np.ndarray | None = None
        count = 0
        for chunk in self.iter_frame_embeddings(audio, sample_rate=sample_rate):
            part = chunk.sum(axis=0, dtype=np.float64)
            total = part if total is None else total + part
            count += chunk.shape[0]
        return (total / max(count, 1)).astype(np.float32)

    def score(
        self, audio: AudioInput, captions: Sequence[str], *, sample_rate: int | None = None
    ) -> np.ndarray:
        """Clip–caption scores of one recording with each caption (the model's reduction).

        Returns
        -------
        np.ndarray, shape=(n_captions,), float32
            Higher means a better match; in ``[0, 1]`` with the paper's clamped cosine.

        Examples
        --------
        >>> model.score("park.wav", ["a dog barks", "a car passes"])  # doctest: +SKIP
        array([0.41, 0.07], dtype=float32)
        """
        import torch

        tokens = self._tokens(captions)
        frames = self.embed_audio(audio, sample_rate=sample_rate)
        with torch.inference_mode():
            q, q_mask = self.aligner.encode_text(tokens)
            a = torch.from_numpy(frames)[None].to(q.device)
            a_mask = torch.ones(a.shape[:2], dtype=torch.bool, device=q.device)
            scores = self.aligner.score_matrix(a, a_mask, q, q_mask)
        return scores[0].float().cpu().numpy()

    # ----------------------------------------------------------------- grounding

    def ground(
        self,
        audio: AudioInput,
        phrases: Sequence[str],
        *,
        sample_rate: int | None = None,
        threshold: float | None = None,
        median_filter: float | None = None,
    ) -> list[GroundingResult]:
        """Find when each phrase happens in a recording.

        Parameters
        ----------
        audio : path or np.ndarray
            A file (any length; streamed) or a waveform at ``sample_rate``.
        phrases : sequence of str
            Sound phrases, e.g. ``["a dog barks", "wind blows"]``.
        sample_rate : int or None
            Required with an array.
        threshold : float or None
            A frame is active when its median-filtered activation is above this
            (default: :attr:`threshold`, chosen on validation).
        median_filter : float or None
            Median filter length in seconds (default: :attr:`median_filter_seconds`; 0 = none).

        Returns
        -------
        list of GroundingResult
            One per phrase, in order.

        Examples
        --------
        >>> for r in model.ground("walk.mp3", ["a dog barks", "birds chirp"]):  # doctest: +SKIP
        ...     print(r.phrase, [(round(on, 2), round(off, 2)) for on, off, _ in r.segments])
        a dog barks [(3.1, 4.52), (7.02, 7.9)]
        birds chirp [(0.0, 10.0)]
        """
        tokens = self._tokens(phrases)
        activation = self.activations(audio, tokens, sample_rate=sample_rate)
        threshold = self.threshold if threshold is None else float(threshold)
        if median_filter is None:
            filter_frames = int(self.meta.inference.median_filter)
        else:
            filter_frames = median_filter_frames(median_filter, frame_rate=self.frame_rate)
        times = np.arange(activation.shape[0], dtype=np.float64) / self.frame_rate
        return [
            GroundingResult(
                phrase=phrase,
                tokens=words,
                times=times,
                activation=activation[:, p],
                segments=activation_segments(
                    activation[:, p],
                    frame_rate=self.frame_rate,
                    threshold=threshold,
                    median_filter_frames=filter_frames,
                ),
            )
            for p, (phrase, words) in enumerate(zip(phrases, tokens, strict=True))
        ]

    def activations(
        self,
        audio: AudioInput,
        phrase_tokens: Sequence[Sequence[str]],
        *,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Frame activations of cleaned phrases, windowed and stitched; only these are kept.

        Returns
        -------
        np.ndarray, shape=(T, n_phrases), float32
        """
        import torch

        with torch.inference_mode():
            q, q_mask = self.aligner.encode_text([list(t) for t in phrase_tokens])
        words = q[q_mask]  # (W_total, D): every phrase's words, in order
        lengths = q_mask.sum(dim=1)
        owner = torch.repeat_interleave(torch.arange(len(phrase_tokens)), lengths.cpu())
        # (W_total, P) averaging matrix: the mean over each phrase's words after the clamp
        average = torch.zeros(words.shape[0], len(phrase_tokens), device=words.device)
        average[torch.arange(words.shape[0]), owner] = 1.0 / lengths.float()[owner]
        clamp = bool(self.aligner.config.clamp)

        def phrase_activations(emb: torch.Tensor) -> np.ndarray:
            sim = emb @ words.T  # (B, T, D) embeddings → (B, T, P)
            if clamp:
                sim = sim.clamp_min(0)
            return (sim @ average).cpu().numpy()

        chunks = self._iter_frames(audio, sample_rate=sample_rate, finish=phrase_activations)
        return np.concatenate(list(chunks)).astype(np.float32, copy=False)

    # ----------------------------------------------------------------- internals

    def _iter_frames(
        self,
        audio: AudioInput,
        *,
        sample_rate: int | None,
        finish: Callable[[Any], np.ndarray],
        window_seconds: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Frames of ``audio``: embeddings ``(B, T, D)`` of each window turned into outputs by
        ``finish``, stitched. The convolutions are shared by overlapping windows wherever the
        window hop is a whole number of the CRNN's pooled frames (always, with the defaults)."""

        def encode(windows: np.ndarray) -> np.ndarray:
            import torch

            with torch.inference_mode():
                return finish(self._encode_windows(windows))

        if window_seconds is not None and np.isinf(window_seconds):
            waveform = self._load_array(audio, sample_rate=sample_rate)
            return iter([encode(waveform[None, :])[0]])
        plan = self.window_plan(window_seconds=window_seconds)
        if isinstance(audio, np.ndarray):
            blocks = array_blocks(self._load_array(audio, sample_rate=sample_rate), plan=plan)
        else:
            blocks = file_blocks(audio, plan=plan, sample_rate=self.sample_rate)
        reduction = self.aligner.audio_encoder.config.time_reduction
        if not self.share_convolutions or (plan.hop // plan.hop_length) % reduction:
            windows = end_aligned_windows(blocks, plan=plan)
            return iter_stitched_frames(
                windows, encode=encode, plan=plan, batch_size=self.batch_size
            )
        windows = end_aligned_windows(blocks, plan=plan, align_frames=reduction)
        return iter_shared_frames(
            windows, encoder=self._shared_front_end(finish, encode), plan=plan,
            batch_size=self.batch_size,
        )

    def _shared_front_end(
        self, finish: Callable[[Any], np.ndarray], whole: Callable[[np.ndarray], np.ndarray]
    ) -> SharedFrontEnd:
        """The aligner split for :func:`~acalign.infer.grounding.iter_shared_frames`."""
        import torch

        def features(samples: np.ndarray) -> torch.Tensor:
            with torch.inference_mode():
                return self._log_mel(torch.from_numpy(samples)[None].to(self.device))[0]

        def front(feats: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self._autocast():
                return self.aligner.encode_audio_front(feats[None])[0]

        def head(pieces: list[torch.Tensor], frames: int) -> np.ndarray:
            with torch.inference_mode():
                with self._autocast():
                    emb = self.aligner.encode_audio_head(torch.stack(pieces), frames)
                return finish(emb.float())

        crnn = self.aligner.audio_encoder
        return SharedFrontEnd(
            features=features,
            front=front,
            head=head,
            whole=whole,
            reduction=crnn.config.time_reduction,
            context=crnn.context_frames,
            feature_margin=int(self.feature_config.n_fft) // 2,
        )

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _load_array(self, audio: AudioInput, *, sample_rate: int | None) -> np.ndarray:
        from acalign.data.audio import load_audio

        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise AcalignError("sample_rate is required when audio is an array")
            return load_audio(audio, sample_rate=self.sample_rate, source_rate=int(sample_rate))
        return load_audio(audio, sample_rate=self.sample_rate)

    def _encode_windows(self, windows: np.ndarray) -> Any:
        """``(B, S)`` waveforms → frame embeddings ``(B, 1 + S // hop, D)`` as a torch tensor."""
        import torch

        with torch.inference_mode():
            wave = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
            feats = self._log_mel(wave.to(self.device))
            with self._autocast():
                emb, _ = self.aligner.encode_audio(feats)
            return emb.float()


def _to_numpy(emb: Any) -> np.ndarray:
    """Torch embeddings → float32 NumPy on the host."""
    return emb.cpu().numpy()


def _model_identity(path: Path) -> str:
    """SHA-256 over the files that decide the embeddings."""
    digest = hashlib.sha256()
    for name in _IDENTITY_FILES:
        file = path / name
        if not file.is_file():
            raise ModelError(f"{path}: not a complete exported model, missing {name}")
        digest.update(name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
