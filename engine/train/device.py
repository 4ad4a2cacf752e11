"""Which device a run trains on: ``auto`` picks CUDA, then Apple's MPS, then the CPU."""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """The asked-for device is not a device name, or this machine does not have it."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but this machine has no CUDA GPU; use auto or cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r} asked for, but this machine has no Apple MPS device; use auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
