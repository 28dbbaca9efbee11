"""Per-fact edit vectors one method's jobs export and another method's jobs replay.

r-ROME (Gupta et al. 2024) differs from ROME only in the closed-form solve: its v* and u are
ROME's under the same settings. So the workflow optimises them once: a ROME job exports each
fact's ``u``, ``k_star``, ``v_star`` (and the optimisation's seconds) per layer, and the r-ROME
job of the same (variant, layer, shard) replays them, applying its own update. Replay is the
same arithmetic as r-ROME computing v* itself in the same batch (tested bit-equal), so this is a
saving, not another method.

File: one safetensors file per (job, layer), ``case_id [n]`` (int64), ``opt_seconds [n]``
(float64) and one ``[n, d]`` float32 tensor per vector name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from safetensors.torch import load_file, save_file

from locedit.io import atomic_path

#: A fact's exported vectors, by name (1-D float32 tensors).
Vectors = dict[str, torch.Tensor]


def vectors_to_json(vectors: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    """Vectors as JSON lists for a checkpoint (float32 → float64 → float32 round-trips exactly)."""
    return {name: v.detach().float().cpu().tolist() for name, v in vectors.items()}


def vectors_from_json(obj: Mapping[str, list[float]]) -> Vectors:
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in obj.items()}


def write_edit_vectors(
    exported: Mapping[int, Vectors], opt_seconds: Mapping[int, float], path: str | os.PathLike
) -> None:
    """Write the vectors of the cases in ``exported`` (by case_id, sorted), atomically."""
    ids = sorted(exported)
    tensors = {
        "case_id": torch.tensor(ids, dtype=torch.int64),
        "opt_seconds": torch.tensor([float(opt_seconds[i]) for i in ids], dtype=torch.float64),
    }
    names = sorted(exported[ids[0]]) if ids else []
    for name in names:
        tensors[name] = torch.stack([exported[i][name].detach().float().cpu() for i in ids])
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def read_edit_vectors(path: str | os.PathLike) -> dict[int, tuple[Vectors, float]]:
    """``{case_id: (vectors, opt_seconds)}`` of one exported file."""
    data = load_file(str(path))
    names = [k for k in data if k not in ("case_id", "opt_seconds")]
    out = {}
    for row, case_id in enumerate(data["case_id"].tolist()):
        # clone: a fresh (aligned) tensor per fact; BLAS rounds a misaligned row view differently
        out[int(case_id)] = ({n: data[n][row].clone() for n in names}, float(data["opt_seconds"][row]))
    return out
