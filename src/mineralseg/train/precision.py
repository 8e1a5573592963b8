"""The numeric precision a run trains in, and the device it ran on (for ``run.json``).

``trainer.precision: auto`` is resolved for the machine: bf16-mixed on GPUs that
support it (16-mixed on the others), bf16-mixed on CPUs that compute bf16 in hardware
(read from ``/proc/cpuinfo``), float32 elsewhere, where bf16 is emulated and slower.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mineralseg.train.config import TrainConfig

__all__ = ["cpu_has_native_bf16", "device_info", "precision"]


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (x86 AMX-BF16 or AVX512-BF16 flags).

    Elsewhere bf16 is emulated and slower than float32. ``cpuinfo`` is the text of
    ``/proc/cpuinfo`` (read when None; False where it cannot be read, e.g. not Linux).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def precision(cfg: TrainConfig) -> str:
    """Lightning's precision for the config (``auto`` resolved for this machine)."""
    p = cfg.trainer.precision
    if p == "auto":
        acc = cfg.trainer.accelerator.lower()
        gpu = acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())
        if gpu:
            return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return {"32": "32-true", "64": "64-true"}.get(p, p)


def device_info(trainer: L.Trainer) -> dict[str, Any]:
    """Host, accelerator, strategy, device count and precision of a Trainer (``run.json``'s ``device``)."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "precision": str(trainer.precision),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info
