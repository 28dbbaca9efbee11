"""Host facts the workflow needs when it is planned, in plain Python (no torch import)."""

from __future__ import annotations

import os
from pathlib import Path

from locedit.files import atomic_path


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


#: The verdict's first words (locedit.analysis.verdict): how the landing page finds it.
VERDICT_OPENING = "Does localization inform editing on "


def report_landing_page(template: str | Path, summary: str | Path, out: str | Path) -> str:
    """The report's landing page: ``template``, with the run's verdict (the first paragraph of
    its ``summary.md``) set above it when the run has one, written to ``out``; else the template.

    Snakemake reads the landing page when ``--report`` plans the workflow, after the run: this
    is when the verdict exists. ``out`` is rewritten only when its text changes, and nothing a
    job reads depends on it.
    """
    summary = Path(summary)
    text = summary.read_text() if summary.is_file() else ""
    found = [p.strip() for p in text.split("\n\n") if p.strip().startswith(VERDICT_OPENING)]
    if not found:
        return str(template)
    page = (f"**The answer of this run** (the Summary's first paragraph).\n\n{found[0]}\n\n"
            + Path(template).read_text())
    out = Path(out)
    if not out.is_file() or out.read_text() != page:
        with atomic_path(out) as tmp:  # a temporary of its own: cluster jobs plan concurrently
            tmp.write_text(page)
    return str(out.resolve())
