"""What the machine can train on: CUDA devices (name, memory), Apple's MPS, CPU cores; and which device a job uses.

Asking torch for CUDA device properties initialises CUDA in the asking process (a context of a few hundred MB on
the GPU). The dashboard server and the queue's supervisor should not hold one, so ``probe_machine`` asks a short
subprocess (``python -m engine.jobs.device --json``) instead; ``machine_info`` asks in-process.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import JobValidationError

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    total_memory: int  # bytes

    @property
    def label(self) -> str:
        return f"cuda:{self.index} - {self.name}, {self.total_memory / 2**30:.1f} GiB"


@dataclass(frozen=True)
class MachineInfo:
    cuda: tuple[CudaDevice, ...] = ()
    mps: bool = False
    cpu_cores: int = 1
    torch_version: str = ""
    note: str = ""  # why the probe could not see everything, shown next to the device picker

    @property
    def default_device(self) -> str:
        """What ``auto`` resolves to here (engine.train.resolve_device: CUDA, then MPS, then CPU)."""
        return "cuda" if self.cuda else "mps" if self.mps else "cpu"

    def choices(self) -> list[str]:
        """Devices a job may ask for on this machine: auto first."""
        out = ["auto", "cpu"]
        out += [f"cuda:{d.index}" for d in self.cuda]
        if self.mps:
            out.append("mps")
        return out

    def describe(self) -> list[str]:
        """One line per compute device, for people."""
        lines = [f"CUDA {d.label}" for d in self.cuda]
        if self.mps:
            lines.append("Apple MPS (Metal) GPU")
        lines.append(f"CPU: {self.cpu_cores} core{'s' if self.cpu_cores != 1 else ''}")
        return lines

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MachineInfo":
        return cls(cuda=tuple(CudaDevice(**c) for c in d.get("cuda", ())), mps=bool(d.get("mps")),
                   cpu_cores=int(d.get("cpu_cores", 1)), torch_version=str(d.get("torch_version", "")),
                   note=str(d.get("note", "")))


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_info() -> MachineInfo:
    """Ask torch in this process (initialises CUDA when there is a GPU)."""
    import torch

    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda.append(CudaDevice(i, p.name, int(p.total_memory)))
    mps = bool(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    return MachineInfo(tuple(cuda), mps, cpu_cores(), torch.__version__)


def probe_machine(timeout_s: float = 60.0) -> MachineInfo:
    """``machine_info`` from a subprocess, so this process keeps no CUDA context. Falls back to CPU only, with a
    note saying why, when the probe fails."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    try:
        out = subprocess.run([sys.executable, "-m", "engine.jobs.device", "--json"], capture_output=True, text=True,
                             timeout=timeout_s, cwd=root, env=env, stdin=subprocess.DEVNULL)
        if out.returncode == 0:
            return MachineInfo.from_dict(json.loads(out.stdout.strip().splitlines()[-1]))
        reason = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        reason = str(e)
    return MachineInfo(cpu_cores=cpu_cores(), note=f"could not ask torch for GPUs ({reason}); showing the CPU only")


def check_device(device: str) -> str:
    """The spelling of a device a job may ask for (whether this machine has it is checked by the job's process,
    where engine.train.resolve_device gives the reason when it does not)."""
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise JobValidationError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return device


def check_device_available(device: str, info: MachineInfo) -> str:
    check_device(device)
    if device.startswith("cuda"):
        if not info.cuda:
            raise JobValidationError(f"device {device!r} asked for, but this machine has no CUDA GPU; "
                                     f"pick one of {', '.join(info.choices())}")
        if ":" in device and int(device.split(":")[1]) >= len(info.cuda):
            raise JobValidationError(f"device {device!r} asked for, but this machine has {len(info.cuda)} CUDA "
                                     f"GPU(s); pick one of {', '.join(info.choices())}")
    if device == "mps" and not info.mps:
        raise JobValidationError(f"device 'mps' asked for, but this machine has no Apple MPS GPU; "
                                 f"pick one of {', '.join(info.choices())}")
    return device


def job_device(requested: str, slot: int) -> str:
    """The device string a job's process trains on. ``auto`` on a machine with several CUDA GPUs spreads running
    jobs over them by their slot (the supervisor gives each running job its own slot: one job per GPU)."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{slot % torch.cuda.device_count()}"
    return "auto"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.jobs.device", description="What this machine has.")
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    args = parser.parse_args(argv)
    info = machine_info()
    print(json.dumps(info.to_dict()) if args.json else "\n".join(info.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
