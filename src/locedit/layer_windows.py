"""The layer window rule, shared by tracing (restore/zero windows), MEMIT and FT-5, and checked
when the workflow is planned; plain Python so planning can use it without importing torch.

The authors' rule (paper-spec §3.6): the window of ``w`` layers around centre ``ℓ`` is
``[ℓ - w//2, ℓ + ceil(w/2))`` clipped to ``[0, n_layers)``: w=5 → [ℓ-2, ℓ+2], w=10 → [ℓ-5, ℓ+4].
"""

from __future__ import annotations


def window_bounds(centre: int, window: int, n_layers: int) -> tuple[int, int]:
    """``[a, b)`` of the window of ``window`` layers around ``centre``, clipped."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return max(0, centre - window // 2), min(n_layers, centre - (-window // 2))


def edit_window(centre: int, window: int, n_layers: int) -> list[int]:
    """The layers an edit centred on ``centre`` rewrites (``centre`` must be a layer)."""
    if not 0 <= centre < n_layers:
        raise ValueError(f"edit layer {centre} outside [0, {n_layers})")
    return list(range(*window_bounds(centre, window, n_layers)))
