"""The contract between edit methods, the five editing problems and the edit job driver.

A method gets an :class:`EditRequest` (what to push up or down, for which subject and prompt) and
returns a :class:`Snapshot` of every weight it touched, taken *before* touching it, so the job
driver undoes an edit bit-exactly with :func:`restore` (never by deep-copying the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from locedit.adapters import edit_weight, is_conv1d


@dataclass(frozen=True)
class EditRequest:
    """One edit.

    Attributes:
        case_id: the datapoint.
        prompt: rewrite template with ``{}`` for the subject (``requested_rewrite.prompt``).
        subject: the subject string.
        target: y, the string whose probability after ``prompt.format(subject)`` the edit pushes
            up (or down when ``minimize``); scored with a leading space (locedit.scoring).
        minimize: fact erasure: minimise p(y | s, r) instead of maximising it.
        noise: fact forcing: ``[n_tokens, d_model]`` Gaussian noise added to the subject's token
            embeddings in *every* prompt the method uses (rewrite prompt, context-template
            prompts, KL prompt), via :func:`locedit.noise.noised_subject`. ``None`` otherwise.
    """

    case_id: int
    prompt: str
    subject: str
    target: str
    minimize: bool = False
    noise: torch.Tensor | None = None


@dataclass
class Snapshot:
    """Original values of the parameters an edit changed, keyed by parameter name."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, model: nn.Module, param: nn.Parameter) -> None:
        """Record ``param``'s current value once (the first save wins: it is the original)."""
        name = _param_name(model, param)
        if name not in self.weights:
            self.weights[name] = param.detach().clone()


def _param_name(model: nn.Module, param: nn.Parameter) -> str:
    for name, p in model.named_parameters():
        if p is param:
            return name
    raise KeyError("parameter does not belong to the model")


@torch.no_grad()
def restore(model: nn.Module, snapshot: Snapshot) -> None:
    """Copy every saved original back into the model (bit-exact undo)."""
    params = dict(model.named_parameters())
    for name, value in snapshot.weights.items():
        params[name].copy_(value)


@torch.no_grad()
def add_update(model: nn.Module, layer: int, delta: torch.Tensor, snapshot: Snapshot) -> None:
    """W[layer] += delta (``[d_model, d_mlp]``, Linear orientation), saving W first."""
    w = edit_weight(model, layer)
    snapshot.save(model, w)
    upd = delta.T if is_conv1d(model) else delta
    if upd.shape != w.shape:
        raise ValueError(f"update of shape {tuple(upd.shape)} does not fit weight {tuple(w.shape)}")
    w.add_(upd.to(w.device, w.dtype))
