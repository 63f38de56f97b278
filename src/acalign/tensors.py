"""Moving small host tensors (lengths, token ids, masks) to the model's device.

On a GPU, ``tensor.to("cuda")`` from ordinary (pageable) host memory waits until the device
has finished all work queued before it, so each such copy in a training step stalls the CPU
until the GPU catches up: the two stop overlapping. Copies from pinned memory are queued
instead. Everything here is a plain ``.to()`` on the CPU.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; host-to-GPU copies go through pinned memory, without a sync."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


__all__ = ["to_device"]
