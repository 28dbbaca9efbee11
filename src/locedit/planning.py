"""Host facts the workflow needs when it is planned, in plain Python (no torch import)."""

from __future__ import annotations

import os
from pathlib import Path


def export_package_path(src: str | Path) -> None:
    """Put ``src`` first on ``PYTHONPATH`` for every job this process starts (local, conda or
    cluster), so jobs import this checkout's package: the code whose content hashes decide
    reruns, also in a conda env that holds only the dependencies."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(src)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), *rest])


def cuda_present() -> bool:
    """Whether this host has a visible NVIDIA GPU (what ``model.device: auto`` picks)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
