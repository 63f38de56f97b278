"""GPU paths: training with ``accelerator=gpu`` and inference with ``device="cuda"``.

Skipped where no CUDA device is visible (CI has none); run on a GPU machine with
``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acalign.infer.model import load_model
from acalign.infer.synthetic import save_band_detector, scene
from acalign.train import resolve_config, train
from test_dataset import write_tiny_data
from test_train import FAST, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny-gpu") / "data", np.random.default_rng(7))


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_training_on_the_gpu_exports_a_model_that_scores_alike_on_cpu_and_gpu(
    precision: str, data_dir: Path, tmp_path: Path
) -> None:
    config = resolve_config(tiny_config(precision=precision, channels_last=precision != "32"))
    model_dir = train(config, data_dir, tmp_path / "run",
                      trainer_overrides={**FAST, "accelerator": "gpu", "devices": 1})
    clip = scene(4.0, [("dog", 1.0, 2.5)], sample_rate=16000, rng=np.random.default_rng(0))
    on_cpu = load_model(model_dir).embed_audio(clip, sample_rate=16000)
    on_gpu = load_model(model_dir, device="cuda").embed_audio(clip, sample_rate=16000)
    # cuDNN convolutions use TF32 by default: about 2e-4 from the float32 CPU result.
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3)


def test_grounding_on_the_gpu_matches_the_cpu(tmp_path: Path) -> None:
    path = save_band_detector(tmp_path / "detector")
    audio = scene(25.0, [("dog", 3.0, 5.0), ("dog", 14.0, 17.5)], sample_rate=32000,
                  rng=np.random.default_rng(1))
    cpu = load_model(path).ground(audio, ["a dog barks"], sample_rate=32000)[0]
    gpu = load_model(path, device="cuda", batch_size=4).ground(audio, ["a dog barks"], sample_rate=32000)[0]
    np.testing.assert_allclose(gpu.activation, cpu.activation, atol=1e-4)
    assert [(round(a, 2), round(b, 2)) for a, b, _ in gpu.segments] == [
        (round(a, 2), round(b, 2)) for a, b, _ in cpu.segments
    ]
    bf16 = load_model(path, device="cuda", bf16=True, channels_last=True).ground(
        audio, ["a dog barks"], sample_rate=32000)[0]
    assert np.abs(bf16.activation - cpu.activation).max() < 0.05


def test_batches_move_to_the_gpu_with_lengths_and_pair_clips_left_on_the_host(data_dir: Path) -> None:
    from acalign.train import AlignDataModule

    datamodule = AlignDataModule(data_dir, config=resolve_config(tiny_config()))
    batch = next(iter(datamodule.train_dataloader()))
    moved = datamodule.transfer_batch_to_device(batch, torch.device("cuda"), 0)
    assert moved.features.is_cuda and moved.mask.is_cuda and moved.caption_clip.is_cuda
    assert moved.lengths.device.type == "cpu" and moved.pair_clip.device.type == "cpu"
