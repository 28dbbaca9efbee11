"""The one figure style and the one way figures are written, for every stage's plots.

Figures are byte-reproducible: the PDF carries no creation date, so the same tables give the same
files (and a rerun that changes nothing changes no figure).
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # jobs run headless, also on cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from locedit.io import atomic_path  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def save_figure(fig: plt.Figure, png: str | os.PathLike, pdf: str | os.PathLike) -> None:
    """Write ``fig`` as PNG and PDF (atomically, no timestamps) and close it."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
