"""The paper's own code beside acalign on the same inputs, the same time budget and the same metrics.

Needs the reference implementation in ``../shared/reference/audio-caption-alignment/`` (skipped
with a clear line when it is absent) and a corpus with features (``--data``, default the demo's
``runs/demo/corpus``). For each seed it

1. writes the inputs both systems share: every word of the corpus's (cleaned) captions encoded
   alone by MiniLM (384-d, static), as a word2vec text file for acalign's ``--word2vec`` and as
   the reference's vocabulary of word vectors; acalign's log-mel features for both;
2. trains the reference with its own modules (``models.core.CRNNWordModel``,
   ``utils.criterion_utils.TripletRankingLoss``, ``utils.model_utils.train/eval``, its data
   set and collate function) in a driver of ours that repeats ``main.py``'s epoch loop without
   Ray — evaluating train, val and test losses after every epoch, ReduceLROnPlateau on the
   validation loss — and keeps the epoch of lowest validation loss, as its analysis script does;
   its ``proj_dim`` is the word-vector size (384), so its BiGRU is 2 × 192;
3. trains acalign's ``paper`` and ``default`` configs on the same inputs for the same budget;
4. evaluates all of them with acalign's metric code (the reference's weights copied into
   acalign's CRNN, which has the same layout), including the reference's own frame-level
   P/R/F1 protocol (min–max normalised activations, 99 thresholds; best F1), and appends the
   table (mean ± std over seeds, epochs reached, clips/s) to ``results.md``.

Runs live in ``--out`` (default ``runs/bench_reference``); a finished run is reused, so an
interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import append_section, machine

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "audio-caption-alignment"
SYSTEMS = ("reference", "paper", "default")
METRICS = (
    ("epochs", "epochs"),
    ("clips_per_s", "clips/s"),
    ("t2a_R@1", "T→A R@1"),
    ("t2a_R@10", "T→A R@10"),
    ("t2a_mAP@10", "T→A mAP@10"),
    ("frame_auc", "frame AUC"),
    ("psds", "PSDS"),
    ("event_f1", "event F1"),
    ("paper_frame_f1", "paper frame F1 (best threshold)"),
)


# --------------------------------------------------------------------------- shared inputs


def read_split(data: Path, split: str) -> Any:
    """The cleaned manifest of ``data/{split}.json`` (as acalign trains on it)."""
    from acalign.data.captions import clean_manifest
    from acalign.data.manifest import read_manifest

    return clean_manifest(read_manifest(data / f"{split}.json"))


def write_word_vectors(data: Path, out: Path) -> Path:
    """Every caption word of every split encoded alone by MiniLM, as a word2vec text file."""
    path = out / "minilm_words.txt"
    if path.is_file():
        return path
    import torch

    from acalign.text import build_text_encoder

    words = sorted({t for split in ("train", "val", "test") if (data / f"{split}.json").is_file()
                    for _, c in read_split(data, split).captions() for t in c.tokens})
    encoder = build_text_encoder({"kind": "minilm"})
    with torch.no_grad():
        vectors = [encoder([[w]])[0][0, 0].float().numpy() for w in words]
    lines = [f"{len(words)} {len(vectors[0])}"] + [f"{w} " + " ".join(f"{x:.6f}" for x in v) for w, v in zip(words, vectors, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- the reference


class _FeatureMapping:
    """acalign's feature store seen as the h5py file the reference reads (``f[ytid][()]``)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getitem__(self, key: str) -> np.ndarray:
        return np.asarray(self.store[key], dtype=np.float32)


def _reference_frame(data: Path, split: str) -> Any:
    """One row per caption, with the columns the reference's data set reads."""
    import pandas as pd

    rows = []
    for clip, caption in read_split(data, split).captions():
        stamps = sorted({(s.onset, s.offset) for p in caption.phrases for s in p.segments}) or [(0.0, 0.0)]
        rows.append({"audiocap_id": caption.caption_id, "ytid": clip.audio_id,
                     "caption_tokens": list(caption.tokens), "timestamps": [list(s) for s in stamps]})
    return pd.DataFrame(rows)


def train_reference(data: Path, words: Path, out: Path, *, seed: int, minutes: float) -> None:
    """Train the reference's model with its own modules for ``minutes``; save the best epoch."""
    import random

    import torch
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(REFERENCE))
    from utils import criterion_utils, data_utils, model_utils  # the reference's own modules

    from acalign.data.features import FeatureStore
    from acalign.text.word2vec import read_word_vectors

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    names, vectors = read_word_vectors(words)
    vocabulary = data_utils.Vocabulary()
    vocabulary.add_word("<pad>", np.zeros(vectors.shape[1], dtype=np.float32))
    for name, vector in zip(names, vectors, strict=True):
        vocabulary.add_word(name, vector)
    loaders = {}
    for split in ("train", "val", "test"):
        store = FeatureStore(data / "features" / f"{split}.h5")
        dataset = data_utils.QueryAudioDataset(_FeatureMapping(store), _reference_frame(data, split),
                                               "caption_tokens", vocabulary)
        loaders[split] = DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=data_utils.collate_fn)
    model_config = {"name": "CRNNWordModel", "args": {"proj_dim": int(vectors.shape[1]),
                                                      "audio_encoder": {"input_dim": 64},
                                                      "text_encoder": {"pretrained": True, "trainable": False}}}
    model = model_utils.get_model(model_config, vocabulary)
    criterion = criterion_utils.TripletRankingLoss(margin=1.0, reduction="STSQ")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=5, threshold=0.001)
    deadline = time.perf_counter() + minutes * 60
    train_loader = loaders["train"]
    loaders["train"] = _Until(train_loader, deadline)
    log, best, trained_clips, train_seconds = [], math.inf, 0, 0.0
    for epoch in range(101):
        if epoch > 0:
            start = time.perf_counter()
            model_utils.train(model, optimizer, criterion, loaders["train"])
            train_seconds += time.perf_counter() - start
            trained_clips += loaders["train"].served
        losses = {split: float(model_utils.eval(model, criterion, loader)) for split, loader in
                  (("train", train_loader), ("val", loaders["val"]), ("test", loaders["test"]))}
        scheduler.step(losses["val"])
        log.append({"epoch": epoch, **losses, "time_s": round(minutes * 60 - (deadline - time.perf_counter()), 1)})
        if losses["val"] < best:
            best = losses["val"]
            torch.save(model.state_dict(), out / "reference_best.pt")
            log[-1]["best"] = True
        if time.perf_counter() >= deadline:
            break
    epochs = (trained_clips / len(train_loader.dataset)) if len(train_loader.dataset) else 0.0
    summary = {"epochs": round(epochs, 2), "clips_per_s": round(trained_clips / max(train_seconds, 1e-9), 2),
               "log": log}
    (out / "reference_log.json").write_text(json.dumps(summary, indent=1))


class _Until:
    """A data loader that stops yielding batches once ``deadline`` (perf_counter) has passed, so
    the reference stops mid-epoch at the budget as Lightning's ``max_time`` does."""

    def __init__(self, loader: Any, deadline: float) -> None:
        self.loader, self.deadline, self.served = loader, deadline, 0

    def __iter__(self):
        self.served = 0
        for batch in self.loader:
            if time.perf_counter() >= self.deadline:
                return
            self.served += len(batch[-1])
            yield batch

    def __len__(self) -> int:
        return len(self.loader)


#: Reference ``audio_encoder.features`` index → acalign CRNN block (BatchNorm, conv) indices.
_REFERENCE_LAYERS = {0: ("blocks.0.norm",), 1: ("blocks.0.conv",), 4: ("blocks.1.norm",), 5: ("blocks.1.conv",),
                     7: ("blocks.2.norm",), 8: ("blocks.2.conv",), 11: ("blocks.3.norm",), 12: ("blocks.3.conv",),
                     14: ("blocks.4.norm",), 15: ("blocks.4.conv",)}


def export_reference(data: Path, words: Path, run: Path) -> None:
    """Copy the reference's best weights into acalign's CRNN (same layout) and export the model."""
    import torch

    from acalign.data.captions import Vocabulary
    from acalign.data.features import FeatureStore
    from acalign.models.aligner import Aligner, AlignerConfig
    from acalign.models.crnn import CRNNConfig
    from acalign.models.export import InferenceConfig, save_exported
    from acalign.text import build_text_encoder

    state = torch.load(run / "reference_best.pt", map_location="cpu", weights_only=True)
    dim = state["text_encoder.embedding.weight"].shape[1]
    config = AlignerConfig(audio=CRNNConfig(gru_hidden=dim // 2), text={"kind": "word2vec", "path": str(words)},
                           reduction="mean", clamp=True)
    text = build_text_encoder(dict(config.text), vocabulary=Vocabulary.from_manifest(read_split(data, "train")))
    aligner = Aligner(config, text_encoder=text)
    mapped = {}
    for key, value in state.items():
        if key.startswith("audio_encoder.gru."):
            mapped[key.removeprefix("audio_encoder.")] = value
        elif key.startswith("audio_encoder.features."):
            index, name = key.removeprefix("audio_encoder.features.").split(".", 1)
            mapped[f"{_REFERENCE_LAYERS[int(index)][0]}.{name}"] = value
    aligner.audio_encoder.load_state_dict(mapped, strict=True)
    store = FeatureStore(data / "features" / "train.h5")
    save_exported(aligner, run / "model", feature_config=store.config, inference=InferenceConfig(),
                  extra={"source": "reference implementation", "weights": "reference_best.pt"})


# --------------------------------------------------------------------------- acalign


def train_acalign(system: str, data: Path, words: Path, run: Path, *, seed: int, minutes: float) -> None:
    """``acalign train`` of a bundled config on the shared inputs, in its own process."""
    command = [sys.executable, "-c", "import sys; from acalign.cli import main; sys.exit(main(sys.argv[1:]))", "train", "--config", system, "--data", str(data), "--out", str(run),
               "--seed", str(seed), "--max-time", str(minutes), "--max-epochs", "100", "--no-progress"]
    if system == "paper":
        command += ["--word2vec", str(words), "--set", "model.audio.gru_hidden=192"]
    if (run / "checkpoints" / "last.ckpt").is_file():
        command.append("--resume")
    subprocess.run(command, check=True)


def acalign_speed(run: Path, n_train: int) -> dict[str, float]:
    """Epochs reached (training pairs seen / training captions) and mean clips/s of a run."""
    import csv

    with (run / "logs" / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    rates = [float(r["train/clips_per_s"]) for r in rows if r.get("train/clips_per_s")]
    steps = max((int(r["step"]) for r in rows if r.get("step")), default=0) + 1
    batch = 32  # the batch size of both bundled configs and of the reference
    return {"epochs": round(steps * batch / n_train, 2),
            "clips_per_s": round(float(np.mean(rates)), 2) if rates else float("nan")}


# --------------------------------------------------------------------------- evaluation and table


def evaluate(run: Path, data: Path) -> dict[str, float]:
    """acalign's evaluation of ``run/model`` on the test split; the flat numbers of the table."""
    from acalign.evaluate import evaluate_run

    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else evaluate_run(run, data, split="test", gallery=0)
    t2a, sed = metrics["retrieval"]["text_to_audio"], metrics["sed"]
    return {"t2a_R@1": t2a["R@1"], "t2a_R@10": t2a["R@10"], "t2a_mAP@10": t2a["mAP@10"],
            "frame_auc": sed["frame_auc"], "psds": sed["psds"], "event_f1": sed["event_f1"],
            "paper_frame_f1": sed["frame_f1_best"]}


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (std over seeds, ddof=1), or the value for one seed."""
    finite = [v for v in values if v == v]
    if not finite:
        return "–"
    if len(finite) == 1:
        return f"{finite[0]:.3f}"
    return f"{np.mean(finite):.3f} ± {np.std(finite, ddof=1):.3f}"


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and tabulate; return 0 (also when the reference is absent)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "demo" / "corpus",
                        help="corpus with features (default: runs/demo/corpus, built by make demo)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_reference", help="runs folder")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per run (default: 12)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"some of {', '.join(SYSTEMS)}")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to results.md")
    parser.add_argument("--train-reference", nargs=2, metavar=("RUN", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not REFERENCE.is_dir():
        print(f"skipping the reference benchmark: {REFERENCE} not found (it sits beside the repository in ../shared)")
        return 0
    if not (args.data / "features" / "train.h5").is_file():
        print(f"skipping the reference benchmark: no corpus with features at {args.data} (run make demo, or give --data)")
        return 0
    words = write_word_vectors(args.data, args.out)
    if args.train_reference:
        run, seed = Path(args.train_reference[0]), int(args.train_reference[1])
        train_reference(args.data, words, run, seed=seed, minutes=args.minutes)
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    results: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    n_train = read_split(args.data, "train").n_captions
    for seed in seeds:
        for system in systems:
            run = args.out / f"{system}-seed{seed}"
            run.mkdir(parents=True, exist_ok=True)
            print(f"=== {system}, seed {seed}", flush=True)
            if system == "reference":
                if not (run / "reference_log.json").is_file():
                    subprocess.run([sys.executable, __file__, "--data", str(args.data), "--out", str(args.out),
                                    "--minutes", str(args.minutes), "--train-reference", str(run), str(seed)], check=True)
                if not (run / "model" / "acalign.json").is_file():
                    export_reference(args.data, words, run)
                log = json.loads((run / "reference_log.json").read_text())
                speed = {"epochs": log["epochs"], "clips_per_s": log["clips_per_s"]}
            else:
                if not (run / "model" / "acalign.json").is_file():
                    train_acalign(system, args.data, words, run, seed=seed, minutes=args.minutes)
                speed = acalign_speed(run, n_train)
            results[system].append({**speed, **evaluate(run, args.data)})
    header = "| system | " + " | ".join(label for _, label in METRICS) + " |"
    rows = [header, "|" + " --- |" * (len(METRICS) + 1)]
    labels = {"reference": "reference code (triplet, mean; its own modules, no Ray)",
              "paper": "acalign `--config paper --word2vec` (BiGRU 2 × 192)", "default": "acalign `--config default`"}
    for system in systems:
        cells = [mean_std([r[key] for r in results[system]]) for key, _ in METRICS]
        rows.append(f"| {labels[system]} | " + " | ".join(cells) + " |")
    body = "\n".join(rows) + (
        f"\n\nCorpus {args.data} (test split), seeds {args.seeds}, {args.minutes:g} min of training per run on "
        f"this machine ({machine()}); mean ± std over seeds. Same log-mel features and the same static "
        "MiniLM word vectors (each word encoded alone) for the reference and the paper row; every row scored "
        "by acalign's metric code; paper frame F1 is the reference's own protocol (min–max normalised "
        "activations, 99 thresholds, best F1)."
    )
    print(body)
    if not args.no_append:
        append_section("The reference implementation beside acalign", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
