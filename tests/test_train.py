"""Training: a smoke run on 16 tiny clips, resume, deterministic validation, config errors, CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from acalign.cli import main as cli_main
from acalign.errors import AcalignError
from acalign.train import (
    VAL_METRICS,
    AlignDataModule,
    AlignModule,
    build_model,
    flat_retrieval_metrics,
    resolve_config,
    resolve_precision,
    train,
)
from test_dataset import write_tiny_data

FAST = {"enable_progress_bar": False, "enable_model_summary": False}


def tiny_config(**changes: Any) -> dict[str, Any]:
    """A config dict for a ~2 k-parameter model on the tiny data (16 mel bands, learned text)."""
    raw: dict[str, Any] = {
        "model": {
            "audio": {
                "n_mels": 16,
                "channels": [4, 8],
                "pools": [[2, 4], [2, 4]],
                "gru_hidden": 8,
                "dropout": 0.1,
            },
            "text": {"kind": "learned", "dim": 16},
            "reduction": "max_time_mean_words",
        },
        "loss": "triplet",
        "batch_size": 8,
        "max_epochs": 2,
        "val_metric": "val/t2a_mAP@10",
        "seed": 3,
        "log_every_n_steps": 1,
        "num_threads": 1,
    }
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny") / "data", np.random.default_rng(7))


@pytest.fixture(scope="module")
def finished_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    config = resolve_config(tiny_config())
    train(config, data_dir, run_dir, trainer_overrides=FAST)
    return run_dir


def _read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_smoke_run_writes_config_checkpoints_logs_and_model(finished_run: Path) -> None:
    saved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert saved["loss"] == "triplet" and saved["model"]["audio"]["channels"] == [4, 8]
    assert (finished_run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((finished_run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert list((finished_run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    rows = _read_metrics(finished_run)
    epochs = {row["epoch"] for row in rows if row.get("val/t2a_mAP@10")}
    assert epochs == {"0", "1"}
    assert any(row.get("train/clips_per_s") for row in rows)
    for name in ("acalign.json", "model.safetensors", "config.yaml", "inference.json"):
        assert (finished_run / "model" / name).is_file()
    last = torch.load(finished_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["acalign"]["train_config"]["seed"] == 3  # the config travels inside checkpoints
    assert (last["epoch"], last["global_step"]) == (1, 4)  # refreshed every epoch, improved or not


def test_exported_model_reloads_to_identical_scores(finished_run: Path, data_dir: Path) -> None:
    from acalign.models.export import load_exported

    aligner, meta = load_exported(finished_run / "model")
    assert meta.extra["val_metric"] == "val/t2a_mAP@10"
    assert meta.feature_config.n_mels == 16
    checkpoint = torch.load(sorted((finished_run / "checkpoints").glob("best-*.ckpt"))[0], weights_only=False)
    config = resolve_config(tiny_config())
    datamodule = AlignDataModule(data_dir, config=config)
    module = AlignModule(build_model(config, datamodule), config)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    batch = datamodule.collate([datamodule.val_set[i] for i in range(len(datamodule.val_set))])
    with torch.no_grad():
        scores = []
        for model in (module.aligner, aligner):
            a, am = model.encode_audio(batch.features, batch.lengths)
            q, qm = model.encode_text(batch.tokens)
            scores.append(model.score_matrix(a, am, q, qm))
    torch.testing.assert_close(scores[0], scores[1], atol=1e-6, rtol=0)


def test_resume_continues_from_the_saved_step(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(resolve_config(tiny_config(max_epochs=1)), data_dir, run_dir, trainer_overrides=FAST)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == 2  # 16 pairs / batch 8
    with pytest.raises(AcalignError, match="already holds a training run"):
        train(resolve_config(tiny_config(max_epochs=2)), data_dir, run_dir, trainer_overrides=FAST)
    train(resolve_config(tiny_config(max_epochs=2)), data_dir, run_dir, resume=True, trainer_overrides=FAST)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4 and resumed["epoch"] == 1
    epochs = [int(row["epoch"]) for row in _read_metrics(run_dir) if row.get("val/loss")]
    assert epochs == [0, 1]  # the resumed run did not restart at epoch 0; the CSV log kept epoch 0
    with pytest.raises(AcalignError, match="different loss"):
        train(resolve_config(tiny_config(loss="infonce")), data_dir, run_dir, resume=True, trainer_overrides=FAST)


def test_validation_metrics_are_deterministic(data_dir: Path, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    config = resolve_config(tiny_config())
    datamodule = AlignDataModule(data_dir, config=config)
    module = AlignModule(build_model(config, datamodule), config)
    trainer = pl.Trainer(logger=False, default_root_dir=tmp_path, **FAST)
    first = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    second = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert set(first) >= {"val/loss", "val/t2a_mAP@10", "val/a2t_R@1"}
    assert first == second
    assert first["val/loss"] > 0  # triplet with random impostors: not trivially zero


def test_same_seed_gives_the_same_run(data_dir: Path, tmp_path: Path) -> None:
    losses = []
    for name in ("a", "b"):
        train(resolve_config(tiny_config(max_epochs=1)), data_dir, tmp_path / name, trainer_overrides=FAST)
        losses.append([r["val/loss"] for r in _read_metrics(tmp_path / name) if r.get("val/loss")])
    assert losses[0] == losses[1]


def test_low_memory_recomputes_block_one_and_trains_the_same(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acalign.train as acalign_train

    # The malloc setting is process-wide and not what is tested here: keep it out of the suite.
    monkeypatch.setattr(acalign_train, "limit_malloc_retention", lambda: None)
    losses = []
    for name, low in (("normal", False), ("low", True)):
        config = resolve_config(tiny_config(max_epochs=1, low_memory=low))
        datamodule = AlignDataModule(data_dir, config=config)
        assert build_model(config, datamodule).audio_encoder.recompute_first_block is low
        train(config, data_dir, tmp_path / name, trainer_overrides=FAST)
        losses.append([float(r["val/loss"]) for r in _read_metrics(tmp_path / name) if r.get("val/loss")])
    assert losses[0] and losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize("loss", ["infonce", "bce"])
def test_other_losses_train_and_give_finite_values(loss: str, data_dir: Path, tmp_path: Path) -> None:
    metric = "val/loss" if loss == "bce" else "val/t2a_R@5"
    config = resolve_config(tiny_config(loss=loss, max_epochs=1, val_metric=metric))
    model_dir = train(config, data_dir, tmp_path / loss, trainer_overrides=FAST)
    rows = [r for r in _read_metrics(tmp_path / loss) if r.get("val/loss")]
    assert np.isfinite(float(rows[-1]["val/loss"]))
    if loss == "bce":
        import json

        extra = json.loads((model_dir / "acalign.json").read_text())["extra"]
        scale, bias = extra["bce_logit"]["scale"], extra["bce_logit"]["bias"]
        threshold = json.loads((model_dir / "inference.json").read_text())["threshold"]
        assert threshold == pytest.approx(min(max(-bias / scale, 0.0), 1.0))


def test_retrieval_metrics_reward_the_right_clip_and_not_ties() -> None:
    caption_clip = torch.tensor([0, 0, 1, 2])
    perfect = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    metrics = flat_retrieval_metrics(perfect, caption_clip)
    assert metrics["t2a_R@1"] == 1.0 and metrics["a2t_mAP@10"] == 1.0
    constant = flat_retrieval_metrics(torch.zeros(3, 4), caption_clip)
    assert constant["t2a_R@1"] == 0.0


def test_bad_config_key_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AcalignError, match="unknown key") as info:
        resolve_config(tiny_config(learning_rate=0.1))
    assert "\n" not in str(info.value)
    with pytest.raises(AcalignError, match=r"model\.audio.*unknown key"):
        resolve_config(tiny_config(), sets=["model.audio.chanels=[4]"])
    with pytest.raises(AcalignError, match="val_metric must be one of"):
        resolve_config(tiny_config(val_metric="val/accuracy"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [unclosed\n")
    with pytest.raises(AcalignError, match="not valid YAML"):
        resolve_config(bad)


def test_bundled_configs_resolve_with_overrides() -> None:
    for name in ("paper", "default", "supervised"):
        config = resolve_config(name, seed=11, max_epochs=3, max_minutes=2.5)
        assert (config.seed, config.max_epochs, config.max_minutes) == (11, 3, 2.5)
        config.validate()
    paper = resolve_config("paper")
    assert (paper.loss, paper.margin, paper.model.reduction, paper.val_metric) == ("triplet", 1.0, "mean", "val/loss")
    assert (paper.lr, paper.batch_size, paper.plateau_factor, paper.plateau_patience) == (1e-3, 32, 0.1, 5)
    assert resolve_config("supervised").loss == "bce"
    assert resolve_config("default").val_metric in VAL_METRICS
    assert resolve_config("default", sets=["model.reduction=mean"]).model.reduction == "mean"


def test_auto_precision_takes_bf16_only_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import acalign.train as train_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16-mixed"), (False, "32")):
        monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", "auto") == expected
        assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice stands
    assert resolve_precision("32", "gpu") == "32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, "bf16-mixed"), (False, "32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve_precision("auto", "gpu") == expected
        assert resolve_precision("auto", "auto") == expected
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "32"  # a CPU run on a GPU machine
    assert resolve_config("paper").precision == "auto"


def test_word2vec_option_switches_the_text_encoder(tmp_path: Path) -> None:
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("2 3\ndog 1 0 0\nbarks 0 1 0\n")
    config = resolve_config("paper", word2vec=vectors)
    assert config.model.text == {"kind": "word2vec", "path": str(vectors.resolve())}
    with pytest.raises(AcalignError, match="word2vec file not found"):
        resolve_config("paper", word2vec=tmp_path / "absent.bin")


def test_cli_reports_user_errors_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(lossy="x")))
    code = cli_main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown key(s) lossy" in err and "\n" not in err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--set", "lr=abc"], "--set lr=abc: lr must be a number, got 'abc'"),
        (["--set", "lrr=0.1"], "--set lrr=0.1: unknown key(s) lrr"),
        (["--max-epochs", "0"], "--max-epochs 0: max_epochs must be >= 1"),
        (["--set", "batch_size=2.5"], "batch_size must be an integer, got 2.5"),
        (["--trainer", "bogus=1"], "Lightning Trainer options bogus=1:"),
        (["--accelerator", "foo"], "Lightning Trainer options accelerator='foo':"),
        (["--strategy", "foo"], "Lightning Trainer options strategy='foo':"),
    ],
)
def test_cli_blames_the_option_the_user_typed_on_one_line(
    extra: list[str], expected: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    argv = ["train", "--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "r"), *extra]
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert str(config) not in err[0]


def test_values_yaml_types_differently_but_that_mean_the_same_are_taken() -> None:
    config = resolve_config("paper", sets=["precision=32", "max_epochs=7.0", "channels_last=0"])
    assert (config.precision, config.max_epochs, config.channels_last) == ("32", 7, False)
    assert isinstance(config.max_epochs, int)


def test_only_the_faulty_option_is_blamed_and_nested_keys_read_clearly() -> None:
    with pytest.raises(AcalignError) as caught:
        resolve_config(tiny_config(), sets=["lr=abc"], seed=3)
    assert str(caught.value) == "--set lr=abc: lr must be a number, got 'abc'"
    with pytest.raises(AcalignError) as caught:
        resolve_config(tiny_config(), sets=["model.joint_dim=x"], seed=1)
    assert str(caught.value).startswith("--set model.joint_dim=x [model]: joint_dim must be")
    with pytest.raises(AcalignError, match=r"^--seed -1: seed must be in \[0, 4294967295\], got -1$"):
        resolve_config(tiny_config(), seed=-1)


def test_a_value_yaml_reads_as_text_is_taken_when_it_is_a_number() -> None:
    assert resolve_config(tiny_config(), sets=["lr=1e-3"]).lr == 1e-3


def test_an_out_path_that_is_a_file_is_a_one_line_error(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "run"):
        code = cli_main(["train", "--config", str(config), "--data", str(data_dir), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.endswith(f"{blocker}: exists and is not a directory"), err
    assert blocker.read_text() == "keep me"


def test_cli_trains_with_trainer_flags(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(max_epochs=5)))
    argv = [
        "train", "--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "run"),
        "--max-epochs", "1", "--accelerator", "cpu", "--devices", "1", "--no-progress",
        "--trainer", "limit_train_batches=1", "--set", "batch_size=4",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 1 and saved["acalign"]["train_config"]["batch_size"] == 4
    assert (tmp_path / "run" / "model" / "acalign.json").is_file()


def test_cli_prints_each_lightning_message_once_without_tips(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    argv = [
        sys.executable, "-m", "acalign", "train", "--config", str(config), "--data", str(data_dir),
        "--out", str(tmp_path / "run"), "--max-epochs", "1", "--accelerator", "cpu", "--no-progress",
        "--trainer", "limit_train_batches=1",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert output.count("GPU available:") == 1, output
    assert "Tip:" not in output and "LeafSpec" not in output, output


@pytest.mark.slow
def test_two_process_ddp_trains_and_exports_with_no_code_change(data_dir: Path, tmp_path: Path) -> None:
    overrides = {**FAST, "accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}
    model_dir = train(resolve_config(tiny_config()), data_dir, tmp_path / "run", trainer_overrides=overrides)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 2)  # 16 pairs over 2 ranks, batch 8
    assert (model_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    import os
    import signal
    import time

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(max_epochs=1000)))
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "acalign", "train", "--config", str(config), "--data", str(data_dir), "--out", str(run_dir), "--no-progress"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert last.is_file(), "the run never wrote a checkpoint"
    killed = torch.load(last, map_location="cpu", weights_only=False)  # complete despite the kill
    target = killed["epoch"] + 2
    assert cli_main(["train", "--config", str(config), "--data", str(data_dir), "--out", str(run_dir), "--resume", "--max-epochs", str(target + 1), "--no-progress"]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed["global_step"] > killed["global_step"]
    assert resumed["epoch"] == target
    assert (run_dir / "model" / "acalign.json").is_file()
