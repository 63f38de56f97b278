"""Benchmark: training throughput — the straightforward reference loop vs acalign's training.

On N generated 10 s clips (random 501 × 64 log-mel in an HDF5 feature store of the documented
layout, random 6–12-word captions, v2 manifests for train and a small val split), in one run:

(a) reference loop — what the paper's scripts do: eager fp32, the paper's CRNN from stock torch
    modules (:func:`reference_crnn`), frozen 300-d word
    vectors looked up every step (a fixed random table stands in for word2vec), triplet loss
    whose impostors are redrawn until they come from another clip, Adam, batch 32, features
    read item by item from HDF5, no DataLoader workers. Per-batch split: data / forward /
    backward + step; clips/s over the epoch; peak RSS;
(b) acalign — one epoch of ``configs/paper.yaml`` and of ``configs/default.yaml`` through
    :func:`acalign.train.train` (clips/s from its ``EpochThroughput`` callback; peak RSS of the
    whole process, MiniLM and Lightning included), and of the paper config with
    ``low_memory=true`` (freed buffers returned to the OS at once: the memory/speed trade);
(c) the optimisation candidates on the bare training step (in-memory batch, Aligner + triplet
    loss + Adam): eager fp32, channels-last, bf16 autocast, channels-last + bf16,
    torch.compile + bf16, each with glibc's default malloc thresholds and with them raised;
(d) achieved FLOP/s of forward + backward (3 × the forward FLOPs counted by FlopCounterMode)
    against a measured matmul peak in the same precision;
plus a torch.profiler view of one acalign training step, and a check that bf16 leaves validation
metrics unchanged (paper config, a small generated learnable task, fp32 vs bf16, same seed).

Every measurement runs in a fresh process (its own peak RSS; malloc variables are read at
start-up) and is repeated; tables give medians. Prints a table and appends it to
``benchmarks/results.md``. A measurement, not a test.

    python benchmarks/bench_train.py [--clips 256] [--quick] [--repeats 3] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    MALLOC_ENV,
    append_section,
    load_average,
    median,
    peak_rss_mib,
    run_worker,
    spread,
)

SCRIPT = Path(__file__).resolve()
FRAMES, N_MELS, BATCH, TEXT_DIM = 501, 64, 32, 300
WORDS = (  # noqa: SIM905
    "a the an and while then with in of on by from near distance background loudly softly "
    "dog barks cat meows bird birds chirp sing man speaks woman laughs child shouts people talk "
    "car passes engine idles truck horn honks train whistle blows wind rain falls water flows "
    "door closes bell rings siren wails music plays baby cries clock ticks footsteps crowd cheers"
).split()
# Sounds of the learnable task: (noun, verb, mel rows it raises).
SOUNDS = (
    ("dog", "barks", (4, 12)), ("bird", "chirps", (44, 56)), ("car", "passes", (0, 6)),
    ("bell", "rings", (30, 36)), ("water", "flows", (14, 26)), ("siren", "wails", (36, 44)),
    ("man", "speaks", (8, 18)), ("clock", "ticks", (56, 64)),
)
FILLER = ["loudly", "softly", "nearby", "outside", "while", "then", "in", "the", "distance"]
# name, channels-last, bf16, compile
STEP_VARIANTS = {
    "eager": ("eager fp32", False, False, False),
    "cl": ("channels-last", True, False, False),
    "bf16": ("bf16 autocast", False, True, False),
    "cl_bf16": ("channels-last + bf16", True, True, False),
    "compile_bf16": ("torch.compile + bf16", False, True, True),
}


# --------------------------------------------------------------------------- generated data


def write_feature_store(path: Path, clips: dict[str, np.ndarray]) -> None:
    """Write ``clips`` (audio id → (frames, n_mels) float32) in the documented store layout."""
    import h5py

    from acalign.data.features import (
        CLIPS_GROUP,
        COMPLETE_ATTR,
        CONFIG_ATTR,
        FeatureConfig,
        encode_id,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.attrs[CONFIG_ATTR] = FeatureConfig(n_mels=N_MELS).to_json()
        handle.attrs[COMPLETE_ATTR] = True
        group = handle.create_group(CLIPS_GROUP)
        for audio_id, feats in clips.items():
            group.create_dataset(encode_id(audio_id), data=np.ascontiguousarray(feats, np.float32))


def _random_clip(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[str], list]:
    feats = rng.normal(-12.0, 3.0, (FRAMES, N_MELS)).astype(np.float32)
    tokens = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(6, 13)))]
    return feats, tokens, []


def _learnable_clip(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[str], list]:
    """1–2 sounds, each raising its own mel rows for 2–5 s; the caption names them in order."""
    from acalign.data.manifest import Phrase, Segment

    feats = rng.normal(-12.0, 2.0, (FRAMES, N_MELS)).astype(np.float32)
    chosen = rng.choice(len(SOUNDS), size=int(rng.integers(1, 3)), replace=False)
    events = []
    for k in chosen:
        onset = float(rng.uniform(0, 7))
        offset = min(10.0, onset + float(rng.uniform(2, 5)))
        lo, hi = SOUNDS[k][2]
        feats[int(onset * 50) : int(offset * 50) + 1, lo:hi] += 8.0
        events.append((onset, offset, k))
    events.sort()
    tokens: list[str] = []
    phrases = []
    for n, (onset, offset, k) in enumerate(events):
        if n:
            tokens.append("then")
        start = len(tokens)
        tokens += ["a", SOUNDS[k][0], SOUNDS[k][1]]
        phrases.append(Phrase(" ".join(tokens[start:]), start, len(tokens) - 1, [Segment(onset, offset)]))
    while len(tokens) < 6:
        tokens.append(str(rng.choice(FILLER)))
    return feats, tokens, phrases


def make_corpus(root: Path, *, n_train: int, n_val: int, seed: int = 0, learnable: bool = False) -> Path:
    """Write ``root/{train,val}.json`` (v2) and ``root/features/{train,val}.h5``; return ``root``."""
    from acalign.data.manifest import Caption, Clip, Manifest, write_manifest

    rng = np.random.default_rng(seed)
    make = _learnable_clip if learnable else _random_clip
    for split, count in (("train", n_train), ("val", n_val)):
        clips, features = [], {}
        for i in range(count):
            audio_id = f"{split}_{i:05d}.wav"
            feats, tokens, phrases = make(rng, i)
            features[audio_id] = feats
            caption = Caption(f"{split}_{i:05d}#0", " ".join(tokens), tokens, phrases)
            clips.append(Clip(audio_id, [caption], duration=10.0))
        write_manifest(Manifest(clips), root / f"{split}.json")
        write_feature_store(root / "features" / f"{split}.h5", features)
    return root


# --------------------------------------------------------------------------- (a) reference loop


def reference_crnn() -> Any:
    """The paper's CRNN as the reference code builds it, from stock torch modules only.

    Same layout and parameter count as ``acalign.models.crnn.CRNN`` (732,354), but none of our
    changes: LeakyReLU not in place, ``nn.LPPool2d`` (autograd through ``pow``), plain BatchNorm
    and GRU. Using our CRNN here would hand the reference our optimisations.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ReferenceCRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for cin, cout, pool in ((1, 32, (2, 4)), (32, 128, None), (128, 128, (2, 4)),
                                    (128, 128, None), (128, 128, (1, 4))):
                layers += [nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                           nn.LeakyReLU(0.1)]
                if pool:
                    layers.append(nn.LPPool2d(4, pool))
            self.features = nn.Sequential(*layers)
            self.dropout = nn.Dropout(0.3)
            self.gru = nn.GRU(128, 150, batch_first=True, bidirectional=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.shape[1]
            x = self.features(x.unsqueeze(1))  # (B, 128, T/4, 1)
            x = self.dropout(x.permute(0, 2, 1, 3).flatten(2))
            x = self.gru(x)[0]
            return F.interpolate(x.transpose(1, 2), size=frames, mode="linear").transpose(1, 2)

    return ReferenceCRNN()


def worker_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """The straightforward loop over one epoch; per-batch data / forward / backward+step times."""
    import h5py
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset

    from acalign.data.features import CLIPS_GROUP, encode_id
    from acalign.data.manifest import read_manifest
    from acalign.models.crnn import CRNN, CRNNConfig, count_parameters

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    random.seed(0)
    device = torch.device(spec.get("device", "cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data = Path(spec["data"])
    manifest = read_manifest(data / "train.json")
    vocab = {w: i + 1 for i, w in enumerate(sorted({t for _, c in manifest.captions() for t in c.tokens}))}
    table = np.random.default_rng(0).normal(size=(len(vocab) + 1, TEXT_DIM)).astype(np.float32)
    table[0] = 0.0  # <pad>

    class PerItemH5(Dataset):
        """Reads one clip per item from the open HDF5 file, as the reference does."""

        def __init__(self) -> None:
            self.items = [(clip.audio_id, cap.tokens, n) for n, (clip, cap) in enumerate(manifest.captions())]
            self.h5 = h5py.File(data / "features" / "train.h5", "r")

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str], int]:
            audio_id, tokens, clip = self.items[i]
            return torch.from_numpy(self.h5[CLIPS_GROUP][encode_id(audio_id)][()]), tokens, clip

    def collate(items: list) -> tuple[torch.Tensor, list[list[str]], list[int]]:
        longest = max(f.shape[0] for f, _, _ in items)
        feats = torch.zeros(len(items), longest, N_MELS)
        for row, (f, _, _) in enumerate(items):
            feats[row, : f.shape[0]] = f
        return feats, [t for _, t, _ in items], [c for _, _, c in items]

    def lookup(tokens: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(t) for t in tokens)
        ids = np.zeros((len(tokens), width), np.int64)
        for row, words in enumerate(tokens):
            ids[row, : len(words)] = [vocab[w] for w in words]
        return torch.from_numpy(table[ids]).to(device), torch.from_numpy(ids > 0).to(device)

    def pair_scores(a: torch.Tensor, q: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        sim = torch.einsum("btd,bwd->btw", a, q).clamp_min(0) * q_mask[:, None, :]
        return sim.sum((1, 2)) / (a.shape[1] * q_mask.sum(1))

    def impostor(i: int, clips: list[int]) -> int:
        while True:  # the reference's redraw-until-another-clip sampling
            j = random.randrange(len(clips))
            if clips[j] != clips[i]:
                return j

    model = reference_crnn().to(device)
    if sum(p.numel() for p in model.parameters()) != count_parameters(CRNN(CRNNConfig())):
        raise RuntimeError("reference CRNN and acalign's CRNN differ in size")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(PerItemH5(), batch_size=BATCH, shuffle=True, collate_fn=collate, num_workers=0)
    times: dict[str, list[float]] = {"data": [], "forward": [], "backward": []}
    clips_done = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    iterator = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            feats, tokens, clips = next(iterator)
        except StopIteration:
            break
        feats = feats.to(device)
        sync()
        t1 = time.perf_counter()
        q, q_mask = lookup(tokens)
        q = F.normalize(q, dim=-1)
        a = F.normalize(model(feats), dim=-1)
        caption_imp = [impostor(i, clips) for i in range(len(clips))]
        audio_imp = [impostor(i, clips) for i in range(len(clips))]
        positive = pair_scores(a, q, q_mask)
        loss = (
            (1.0 - positive + pair_scores(a, q[caption_imp], q_mask[caption_imp])).clamp_min(0)
            + (1.0 - positive + pair_scores(a[audio_imp], q, q_mask)).clamp_min(0)
        ).mean()
        sync()
        t2 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()
        t3 = time.perf_counter()
        times["data"].append(t1 - t0)
        times["forward"].append(t2 - t1)
        times["backward"].append(t3 - t2)
        clips_done += len(clips)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"clips_per_s": clips_done / seconds, "seconds": seconds, "clips": clips_done,
            "clips_per_cpu_s": clips_done / cpu,
            "batch_times": times, "rss_mib": peak_rss_mib(), "gpu_mib": _peak_gpu_mib()}


def _peak_gpu_mib() -> float | None:
    """Peak memory PyTorch allocated on the GPU in this process (None on CPU)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


# --------------------------------------------------------------------------- (b) acalign training


def worker_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """One (or more) epochs of a bundled config through ``acalign.train.train``."""
    import csv
    import logging

    import torch

    import acalign.train as acalign_train
    from acalign.train import resolve_config, train

    logging.disable(logging.WARNING)
    cpu: list[list[float]] = []  # per epoch: [CPU time at epoch start, at last batch end, pairs]
    start_hook = acalign_train.EpochThroughput.on_train_epoch_start
    batch_hook = acalign_train.EpochThroughput.on_train_batch_end

    def on_start(self: Any, *args: Any) -> None:
        start_hook(self, *args)
        cpu.append([time.process_time(), time.process_time(), 0])

    def on_batch(self: Any, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int) -> None:
        batch_hook(self, trainer, module, outputs, batch, idx)
        cpu[-1][1] = time.process_time()
        cpu[-1][2] += batch.n_captions

    acalign_train.EpochThroughput.on_train_epoch_start = on_start  # measure CPU time beside
    acalign_train.EpochThroughput.on_train_batch_end = on_batch  # the callback's wall clock
    torch.set_num_threads(spec["threads"])
    sets = [f"{k}={json.dumps(v)}" for k, v in spec.get("sets", {}).items()]
    config = resolve_config(spec["config"], sets=sets, max_epochs=spec.get("epochs", 1))
    run_dir = Path(spec["run_dir"])
    start = time.perf_counter()
    train(config, spec["data"], run_dir, trainer_overrides={
        "enable_progress_bar": False, "enable_model_summary": False, **spec.get("trainer", {}),
    })
    seconds = time.perf_counter() - start
    with open(run_dir / "logs" / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rates = [float(r["train/clips_per_s"]) for r in rows if r.get("train/clips_per_s")]
    val = [
        {k: float(v) for k, v in r.items() if k.startswith("val/") and v}
        | {"epoch": int(float(r["epoch"]))}
        for r in rows if r.get("val/loss")
    ]
    from acalign.train import resolve_precision

    resolved = resolve_precision(config.precision, spec.get("trainer", {}).get("accelerator", "auto"))
    precision = config.precision if resolved == config.precision else f"{config.precision} → {resolved}"
    settings = (f"{precision}{' + channels-last' if config.channels_last else ''}"
                f"{' + compile' if config.compile else ''}, {config.loss}, {config.model.reduction}, "
                f"text {config.model.text.get('kind')}, {config.num_workers} loader workers")
    return {"clips_per_s": rates[0] if rates else float("nan"), "epoch_rates": rates, "settings": settings,
            "clips_per_cpu_s": cpu[0][2] / (cpu[0][1] - cpu[0][0]) if cpu else float("nan"),
            "seconds_total": seconds, "val": val, "rss_mib": peak_rss_mib(), "gpu_mib": _peak_gpu_mib()}


# --------------------------------------------------------------------------- (c) bare step


def build_bare_aligner(*, seed: int = 0) -> Any:
    """The paper's Aligner: CRNN + frozen random 300-d word vectors (word2vec's shape), mean."""
    import torch

    from acalign.data.captions import Vocabulary
    from acalign.models.aligner import Aligner, AlignerConfig
    from acalign.text.word2vec import StaticEmbeddingEncoder

    torch.manual_seed(seed)
    text = StaticEmbeddingEncoder(Vocabulary(WORDS), dim=TEXT_DIM)
    with torch.no_grad():
        text.weight.normal_()
        text.weight[0] = 0.0
    return Aligner(AlignerConfig(text=text.spec()), text_encoder=text)


def bare_batch(seed: int = 0) -> tuple[Any, Any, list[list[str]], Any]:
    """An in-memory batch: (features, lengths, tokens, clip ids)."""
    import torch

    rng = np.random.default_rng(seed)
    feats = torch.from_numpy(rng.normal(-12.0, 3.0, (BATCH, FRAMES, N_MELS)).astype(np.float32))
    tokens = [[str(w) for w in rng.choice(WORDS, size=int(rng.integers(6, 13)))] for _ in range(BATCH)]
    return feats, torch.full((BATCH,), FRAMES), tokens, torch.arange(BATCH)


def worker_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the bare step (forward, triplet loss, backward, Adam) of one variant."""
    import torch

    from acalign.models.losses import triplet_ranking_loss

    torch.set_num_threads(spec["threads"])
    _, channels_last, bf16, compiled = STEP_VARIANTS[spec["variant"]]
    aligner = build_bare_aligner()
    if channels_last:
        aligner.audio_encoder.to(memory_format=torch.channels_last)
    if compiled:
        aligner.audio_encoder.compile()
    optimizer = torch.optim.Adam([p for p in aligner.parameters() if p.requires_grad], lr=1e-3)
    feats, lengths, tokens, clip_ids = bare_batch()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            a, a_mask = aligner.encode_audio(feats, lengths)
            q, q_mask = aligner.encode_text(tokens)
            scores = aligner.score_matrix(a, a_mask, q, q_mask, max_elements=1 << 62)
            loss = triplet_ranking_loss(scores, clip_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    first = time.perf_counter()
    step()
    first = time.perf_counter() - first
    for _ in range(spec["warmup"] - 1):
        step()
    times, cpu = [], []
    for _ in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"times": times, "cpu_times": cpu, "first_step_s": first, "rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------- (d) FLOPs and peaks


def worker_flops(spec: dict[str, Any]) -> dict[str, Any]:
    """Forward FLOPs of one batch (FlopCounterMode; the GRU counted by hand if the counter
    skips it) and the matmul peaks (fp32, bf16) with the given threads."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(spec["threads"])
    aligner = build_bare_aligner()
    feats, lengths, tokens, _ = bare_batch()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        aligner.encode_audio(feats, lengths)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    counted = int(counter.get_total_flops())
    cfg = aligner.audio_encoder.config
    steps = FRAMES // cfg.time_reduction
    gru_in = cfg.channels[-1] * cfg.freq_out
    gru = 2 * 2 * 3 * (gru_in * cfg.gru_hidden + cfg.gru_hidden**2) * steps * BATCH
    # On CPU the GRU decomposes into mm/addmm, which the counter sees; add it by hand otherwise.
    gru_counted = any(k.endswith(("mm", "addmm")) or "gru" in k.lower() for k in by_op)
    total = counted + (0 if gru_counted else gru)
    from acalign.runtime import cpu_has_native_bf16

    peaks = {"bf16": float("nan")}  # stays NaN where bf16 is emulated: 4096² would take minutes
    n = spec.get("matmul_n", 4096)
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if cpu_has_native_bf16() else [])
    for name, dtype in dtypes:
        x = torch.randn(n, n).to(dtype)
        y = torch.randn(n, n).to(dtype)
        torch.matmul(x, y)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            torch.matmul(x, y)
            times.append(time.perf_counter() - t0)
        peaks[name] = 2 * n**3 / median(times)
    return {"forward_flops_per_batch": total, "counted_by_op": by_op, "gru_flops_added": 0 if gru_counted else gru,
            "matmul_peak": peaks}


# --------------------------------------------------------------------------- profile of our step


def worker_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """torch.profiler over acalign training steps (real datamodule and module, no Trainer);
    also the per-batch cost of the data loader and of the text encoder with a warm cache."""
    import logging
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    from acalign.train import (
        AlignDataModule,
        AlignModule,
        build_model,
        resolve_config,
        resolve_precision,
        tune_malloc,
    )

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(spec["threads"])
    config = resolve_config(spec["config"])
    if config.tune_malloc:
        tune_malloc()
    torch.manual_seed(0)
    datamodule = AlignDataModule(spec["data"], config=config)
    aligner = build_model(config, datamodule)
    module = AlignModule(aligner, config)
    aligner.text_encoder.precompute(datamodule.train_tokens)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=config.lr)
    bf16 = resolve_precision(config.precision, "cpu").startswith("bf16")

    loader = datamodule.train_dataloader()
    t0 = time.perf_counter()
    batches = list(loader)
    data_s = (time.perf_counter() - t0) / len(batches)
    t0 = time.perf_counter()
    for b in batches:
        aligner.encode_text(b.tokens)
    text_s = (time.perf_counter() - t0) / len(batches)
    module.train()

    def step(batch: Any) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    times = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(spec["steps"]):
            t0 = time.perf_counter()
            step(batches[(1 + i) % len(batches)])
            times.append(time.perf_counter() - t0)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {
        "config": spec["config"], "step_s": median(times), "data_s_per_batch": data_s,
        "text_s_per_batch": text_s,
        "top": [{"op": e.key, "self_pct": 100 * e.self_cpu_time_total / total,
                 "self_ms_per_step": e.self_cpu_time_total / 1000 / len(times), "calls": e.count}
                for e in top],
    }


# --------------------------------------------------------------------------- driver


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256, help="training clips (default: 256)")
    parser.add_argument("--val-clips", type=int, default=32, help="validation clips (default: 32)")
    parser.add_argument("--quick", action="store_true",
                        help="one process per step variant (median of its steps), short bf16 check")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (default: 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per bare-step process")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["reference", "ours", "steps", "compile", "flops", "profile", "bf16-check"],
                        help="parts to leave out")
    parser.add_argument("--results", type=Path, default=SCRIPT.parent / "results.md")
    parser.add_argument("--no-append", action="store_true", help="print only; do not touch results.md")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


WORKERS = {"reference": worker_reference, "ours": worker_ours, "step": worker_step,
           "flops": worker_flops, "profile": worker_profile}


PARTIAL = Path(tempfile.gettempdir()) / "acalign-bench-train-partial.json"


def save_partial(results: dict[Any, Any]) -> None:
    """Keep every measurement so far in PARTIAL, so a run killed midway still leaves its data."""
    PARTIAL.write_text(json.dumps({str(k): v for k, v in results.items()}))


def log(message: str) -> None:
    """Progress on stderr, with the load average."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average():.1f}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    """Generate the data, run every measurement, print and append the tables."""
    args = parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return 0
    steps = args.steps or (3 if args.quick else 5)
    step_repeats = 1 if args.quick else args.repeats
    from acalign.runtime import cpu_has_native_bf16

    bf16_native = cpu_has_native_bf16()
    if not bf16_native and "bf16-check" not in args.skip:
        # Five epochs at ~1.5 clips/s: about half an hour to learn that emulated bf16 is slow.
        args.skip.append("bf16-check")
        log("this CPU emulates bf16 (no AVX-512 BF16 / AMX): bf16 validation check left out; "
            "training resolves precision auto to 32 here")
    threads = args.threads
    loads: list[float] = [load_average()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="acalign-bench-train-") as tmp:
        tmp_dir = Path(tmp)
        data = make_corpus(tmp_dir / "data", n_train=args.clips, n_val=args.val_clips)
        log(f"corpus: {args.clips} train + {args.val_clips} val clips in {data}")

        # (a) and (b), interleaved so that load drift hits each contender alike
        contenders = []
        if "reference" not in args.skip:
            contenders.append(("reference", {"kind": "reference"}, {}))
        if "ours" not in args.skip:
            contenders += [(f"ours:{c}", {"kind": "ours", "config": c}, {}) for c in ("paper", "default")]
            # the memory/speed trade: freed buffers go back to the OS at once
            contenders.append(("ours:paper:low_memory",
                               {"kind": "ours", "config": "paper", "sets": {"low_memory": True}}, {}))
        for rep in range(args.repeats):
            for name, spec, env in contenders:
                spec = dict(spec, data=str(data), threads=threads, run_dir=str(tmp_dir / f"run-{name}-{rep}"))
                out = run_worker(SCRIPT, spec, env=env, threads=threads)
                results.setdefault(name, []).append(out)
                loads.append(load_average())
                save_partial(results)
                log(f"{name} #{rep + 1}: {out['clips_per_s']:.2f} clips/s, peak RSS {out['rss_mib']:.0f} MiB")

        # (c) bare-step variants × malloc
        variants = [] if "steps" in args.skip else [
            v for v in STEP_VARIANTS if not (v.startswith("compile") and "compile" in args.skip)
        ]
        for rep in range(step_repeats):
            for variant in variants:
                emulated = STEP_VARIANTS[variant][2] and not bf16_native
                if emulated and rep > 0:
                    continue  # one process is enough to show emulated bf16's cost
                for malloc in (False, True) if not emulated else (True,):
                    spec = {"kind": "step", "variant": variant, "threads": threads, "steps": steps,
                            "warmup": 3 if variant.startswith("compile") else 1}
                    out = run_worker(SCRIPT, spec, env=MALLOC_ENV if malloc else {}, threads=threads)
                    results.setdefault(("step", variant, malloc), []).append(out)
                    loads.append(load_average())
                    save_partial(results)
                    log(f"step {variant} malloc={malloc}: median {median(out['times']):.3f} s/step")

        if "flops" not in args.skip:
            results["flops"] = run_worker(SCRIPT, {"kind": "flops", "threads": threads}, threads=threads)
            log(f"flops: {results['flops']['forward_flops_per_batch'] / 1e9:.1f} GFLOP per batch forward")
        if "profile" not in args.skip:
            for config in ("paper", "default"):
                spec = {"kind": "profile", "config": config, "data": str(data), "threads": threads,
                        "steps": 2 if args.quick else 3}
                results[f"profile:{config}"] = run_worker(SCRIPT, spec, threads=threads)
                loads.append(load_average())
                save_partial(results)
                log(f"profile {config} done")
        if "bf16-check" not in args.skip:
            results["bf16"] = bf16_check(tmp_dir, quick=args.quick, threads=threads)
            loads.append(load_average())

    body = report(results, args=args, steps=steps, step_repeats=step_repeats)
    print(body)
    if not args.no_append:
        append_section(f"Training throughput, {args.clips} generated clips", body,
                       results=args.results, load=loads)
        print(f"appended to {args.results}")
    return 0


def bf16_check(tmp_dir: Path, *, quick: bool, threads: int) -> dict[str, Any]:
    """Train the paper config on a small learnable task in fp32 and in bf16, same seed."""
    n_train, n_val, epochs = (128, 64, 3) if quick else (512, 128, 5)
    data = make_corpus(tmp_dir / "learnable", n_train=n_train, n_val=n_val, seed=1, learnable=True)
    out = {"n_train": n_train, "n_val": n_val, "epochs": epochs}
    for precision in ("32", "bf16-mixed"):
        spec = {"kind": "ours", "config": "paper", "data": str(data), "threads": threads,
                "epochs": epochs, "run_dir": str(tmp_dir / f"learn-{precision}"),
                "sets": {"precision": precision, "max_minutes": None}}
        out[precision] = run_worker(SCRIPT, spec, threads=threads)
        log(f"bf16 check {precision}: {out[precision]['val'][-1] if out[precision]['val'] else 'no val'}")
    return out


def _rate(outs: list[dict[str, Any]]) -> float:
    return median([o["clips_per_s"] for o in outs])


def report(results: dict[str, Any], *, args: argparse.Namespace, steps: int, step_repeats: int) -> str:
    """Markdown tables of everything measured."""
    lines: list[str] = []
    ref = results.get("reference")
    ref_rate = _rate(ref) if ref else float("nan")
    ref_rss = median([o["rss_mib"] for o in ref]) if ref else float("nan")
    lines += [
        f"Data: {args.clips} generated 10 s clips (501 × 64 log-mel, HDF5 store), batch {BATCH}, "
        f"{args.threads} torch threads; (a)/(b): one epoch per process, {args.repeats} processes "
        "each (interleaved), medians; RSS = peak of the process.",
        "",
        "| training | clips/s (median) | range | vs (a) | peak RSS MiB | RSS vs (a) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    names = {"reference": "(a) reference loop: eager fp32, per-item HDF5, word-vector lookup, redraw impostors",
             "ours:paper": "(b) acalign train(), configs/paper.yaml",
             "ours:default": "(b) acalign train(), configs/default.yaml",
             "ours:paper:low_memory": "(b) acalign train(), configs/paper.yaml, --set low_memory=true"}
    for key, label in names.items():
        outs = results.get(key)
        if not outs:
            continue
        if outs[0].get("settings"):
            label += f" ({outs[0]['settings']})"
        rate, rss = _rate(outs), median([o["rss_mib"] for o in outs])
        lines.append(f"| {label} | {rate:.1f} | {spread([o['clips_per_s'] for o in outs])} | "
                     f"{rate / ref_rate:.2f}× | {rss:.0f} | {rss / ref_rss:.2f}× |")
    if ref:
        split = {k: median([median(o["batch_times"][k]) for o in ref]) for k in ("data", "forward", "backward")}
        lines += ["", "(a) per batch (median): " + ", ".join(
            f"{k if k != 'backward' else 'backward+step'} {v:.3f} s" for k, v in split.items())
            + f"; total {sum(split.values()):.3f} s."]

    flops = results.get("flops")
    step_keys = [k for k in results if isinstance(k, tuple)]
    if step_keys:
        eager = results.get(("step", "eager", False))
        eager_rate = BATCH / median([t for o in eager for t in o["times"]]) if eager else float("nan")
        lines += [
            "",
            f"(c) bare training step (Aligner: paper CRNN + frozen 300-d vectors, mean reduction, "
            f"triplet, Adam; in-memory batch of {BATCH}); {step_repeats} process(es) × {steps} timed "
            "steps after warm-up, median step time. (d) achieved = 3 × forward FLOPs × clips/s; "
            "peak = measured matmul in that precision.",
            "",
            "| step variant | malloc | clips/s | vs (a) | vs eager | peak RSS MiB | achieved GFLOP/s | % of peak |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        per_clip = flops["forward_flops_per_batch"] / BATCH if flops else float("nan")
        for variant, (label, _, bf16, compiled) in STEP_VARIANTS.items():
            for malloc in (False, True):
                outs = results.get(("step", variant, malloc))
                if not outs:
                    continue
                rate = BATCH / median([t for o in outs for t in o["times"]])
                achieved = 3 * per_clip * rate / 1e9
                peak = flops["matmul_peak"]["bf16" if bf16 else "fp32"] / 1e9 if flops else float("nan")
                extra = f" (first step {median([o['first_step_s'] for o in outs]):.0f} s)" if compiled else ""
                lines.append(
                    f"| {label}{extra} | {'raised' if malloc else 'default'} | {rate:.1f} | "
                    f"{rate / ref_rate:.2f}× | {rate / eager_rate:.2f}× | "
                    f"{median([o['rss_mib'] for o in outs]):.0f} | {achieved:.0f} | {100 * achieved / peak:.0f} % |"
                )
    if flops:
        fwd = flops["forward_flops_per_batch"]
        lines += ["", f"(d) forward FLOPs: {fwd / BATCH / 1e9:.2f} GFLOP per 10 s clip "
                  f"(GRU {'counted' if not flops['gru_flops_added'] else 'added by hand'}: "
                  f"{flops['gru_flops_added'] / BATCH / 1e9:.3f}); by op per batch: "
                  + ", ".join(f"{k} {v / 1e9:.1f} G" for k, v in flops["counted_by_op"].items())
                  + f". Matmul peak ({args.threads} threads, 4096²): fp32 "
                  f"{flops['matmul_peak']['fp32'] / 1e9:.0f} GFLOP/s, bf16 {flops['matmul_peak']['bf16'] / 1e9:.0f} GFLOP/s."]
        for key in ("reference", "ours:paper", "ours:default", "ours:paper:low_memory"):
            if results.get(key):
                lines.append(f"  {key}: achieved {3 * fwd / BATCH * _rate(results[key]) / 1e9:.0f} GFLOP/s.")
    for config in ("paper", "default"):
        prof = results.get(f"profile:{config}")
        if not prof:
            continue
        lines += ["", f"Profile of one acalign training step, configs/{config}.yaml (torch.profiler, "
                  f"self CPU time; step {prof['step_s']:.2f} s; DataLoader with 0 workers "
                  f"{1000 * prof['data_s_per_batch']:.0f} ms/batch; text encoder with warm cache "
                  f"{1000 * prof['text_s_per_batch']:.1f} ms/batch):", "",
                  "| op | self CPU % | ms/step | calls |", "| --- | --- | --- | --- |"]
        lines += [f"| {t['op']} | {t['self_pct']:.1f} | {t['self_ms_per_step']:.0f} | {t['calls']} |"
                  for t in prof["top"][:12]]
    check = results.get("bf16")
    if check:
        lines += ["", f"bf16 vs fp32 validation (configs/paper.yaml, learnable generated task: "
                  f"{check['n_train']} train / {check['n_val']} val clips, {check['epochs']} epochs, seed 0):", "",
                  "| precision | epoch | val/loss | val/t2a_R@10 | val/a2t_R@10 | val/t2a_mAP@10 | clips/s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for precision in ("32", "bf16-mixed"):
            run = check[precision]
            for row, rate in zip(run["val"], run["epoch_rates"] + [math.nan] * len(run["val"]), strict=False):
                lines.append(
                    f"| {precision} | {row['epoch']} | {row.get('val/loss', math.nan):.4f} | "
                    f"{row.get('val/t2a_R@10', math.nan):.3f} | {row.get('val/a2t_R@10', math.nan):.3f} | "
                    f"{row.get('val/t2a_mAP@10', math.nan):.3f} | {rate:.1f} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
