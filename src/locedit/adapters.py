"""Architecture adapters: the one place that knows module paths of each model family.

Everything downstream (tracing, editing, covariance statistics) speaks in canonical names
(``embed``, ``block``, ``mlp``, ``attn``, ``mlp_out`` = the MLP down-projection that ROME,
MEMIT and constrained finetuning rewrite, ``final_norm``, ``lm_head``) and asks this registry
for the module. Registering an architecture is one entry in ``ADAPTERS``; nothing outside this
file names a module path (TransformerLens / pyvene convention, see spec/style.md §14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only in annotations: planning reads the registry without importing it
    import torch
    from torch import nn


@dataclass(frozen=True)
class ArchAdapter:
    """Module path templates (``{layer}`` placeholder) and config attribute names of one family.

    Attributes:
        embed: token embedding module.
        block: transformer block ``{layer}``; its output is the residual stream ("hidden").
        mlp: MLP sub-module of block ``{layer}``; its output is the MLP contribution.
        attn: attention sub-module of block ``{layer}``.
        mlp_out: the MLP down-projection (edit target). Its *input* is the ROME key k.
        final_norm: the last layer norm before the unembedding.
        lm_head: the unembedding.
        n_layers_attr / d_model_attr / n_ctx_attr: names of the HF config attributes (depth,
            residual width, context length).
        conv1d: True when weights are stored as ``transformers`` ``Conv1D`` (``[d_in, d_out]``),
            i.e. transposed with respect to ``nn.Linear`` (``[d_out, d_in]``).
    """

    embed: str
    block: str
    mlp: str
    attn: str
    mlp_out: str
    final_norm: str
    lm_head: str
    n_layers_attr: str
    d_model_attr: str
    n_ctx_attr: str
    conv1d: bool = False


_GPT2 = ArchAdapter(
    embed="transformer.wte",
    block="transformer.h.{layer}",
    mlp="transformer.h.{layer}.mlp",
    attn="transformer.h.{layer}.attn",
    mlp_out="transformer.h.{layer}.mlp.c_proj",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    n_layers_attr="n_layer",
    d_model_attr="n_embd",
    n_ctx_attr="n_positions",
    conv1d=True,  # GPT-2 stores c_fc / c_proj as Conv1D: weight is [d_in, d_out]
)
_GPTJ = ArchAdapter(
    embed="transformer.wte",
    block="transformer.h.{layer}",
    mlp="transformer.h.{layer}.mlp",
    attn="transformer.h.{layer}.attn",
    mlp_out="transformer.h.{layer}.mlp.fc_out",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    n_layers_attr="n_layer",
    d_model_attr="n_embd",
    n_ctx_attr="n_positions",
)
_NEOX = ArchAdapter(
    embed="gpt_neox.embed_in",
    block="gpt_neox.layers.{layer}",
    mlp="gpt_neox.layers.{layer}.mlp",
    attn="gpt_neox.layers.{layer}.attention",
    mlp_out="gpt_neox.layers.{layer}.mlp.dense_4h_to_h",
    final_norm="gpt_neox.final_layer_norm",
    lm_head="lm_head",  # transformers >= 5 (4.x named it embed_out)
    n_layers_attr="num_hidden_layers",
    d_model_attr="hidden_size",
    n_ctx_attr="max_position_embeddings",
)
_LLAMA = ArchAdapter(
    embed="model.embed_tokens",
    block="model.layers.{layer}",
    mlp="model.layers.{layer}.mlp",
    attn="model.layers.{layer}.self_attn",
    mlp_out="model.layers.{layer}.mlp.down_proj",
    final_norm="model.norm",
    lm_head="lm_head",
    n_layers_attr="num_hidden_layers",
    d_model_attr="hidden_size",
    n_ctx_attr="max_position_embeddings",
)

#: The registry, keyed by ``config.architectures[0]`` (or the model class name).
ADAPTERS: dict[str, ArchAdapter] = {
    "GPT2LMHeadModel": _GPT2,
    "GPTJForCausalLM": _GPTJ,
    "GPTNeoXForCausalLM": _NEOX,
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": _LLAMA,
}

#: Canonical component names accepted by :func:`module_for`.
LAYER_COMPONENTS = ("block", "mlp", "attn", "mlp_out")
GLOBAL_COMPONENTS = ("embed", "final_norm", "lm_head")


def architecture_of(model: nn.Module) -> str:
    """The registry key of ``model``: ``config.architectures[0]``, else its class name.

    Models built with ``from_config`` have ``architectures=None``; the class name is the same key.
    """
    archs = getattr(model.config, "architectures", None)
    return archs[0] if archs else type(model).__name__


def get_adapter(model: nn.Module) -> ArchAdapter:
    """Return the adapter of ``model`` or raise ``KeyError`` listing the supported architectures."""
    arch = architecture_of(model)
    try:
        return ADAPTERS[arch]
    except KeyError:
        raise KeyError(
            f"unsupported architecture {arch!r}; supported: {', '.join(sorted(ADAPTERS))}. "
            "Add an ArchAdapter entry to locedit.adapters.ADAPTERS."
        ) from None


def config_shape(config: dict) -> tuple[str, int, int]:
    """``(architecture, n_layers, context length)`` of a model from its ``config.json`` contents,
    without loading it (the workflow checks edit layers and prompt lengths before any model job).

    Raises:
        KeyError: the architecture is not registered (message lists the supported ones).
    """
    archs = config.get("architectures") or []
    arch = archs[0] if archs else str(config.get("model_type", "<unknown>"))
    if arch not in ADAPTERS:
        raise KeyError(
            f"unsupported architecture {arch!r}; supported: {', '.join(sorted(ADAPTERS))}. "
            "Add an ArchAdapter entry to locedit.adapters.ADAPTERS."
        )
    adapter = ADAPTERS[arch]
    return arch, int(config[adapter.n_layers_attr]), int(config[adapter.n_ctx_attr])


def n_layers(model: nn.Module) -> int:
    return int(getattr(model.config, get_adapter(model).n_layers_attr))


def d_model(model: nn.Module) -> int:
    return int(getattr(model.config, get_adapter(model).d_model_attr))


def module_name(model: nn.Module, component: str, layer: int | None = None) -> str:
    """Dotted module path of a canonical ``component`` (at ``layer`` for per-layer ones)."""
    adapter = get_adapter(model)
    if component in GLOBAL_COMPONENTS:
        return getattr(adapter, component)
    if component not in LAYER_COMPONENTS:
        raise ValueError(
            f"unknown component {component!r}; expected one of {LAYER_COMPONENTS + GLOBAL_COMPONENTS}"
        )
    if layer is None or not 0 <= layer < n_layers(model):
        raise ValueError(f"{component} needs a layer in [0, {n_layers(model)}), got {layer}")
    return getattr(adapter, component).format(layer=layer)


def module_for(model: nn.Module, component: str, layer: int | None = None) -> nn.Module:
    """The module of a canonical ``component`` (see :data:`LAYER_COMPONENTS`)."""
    return model.get_submodule(module_name(model, component, layer))


def edit_weight(model: nn.Module, layer: int) -> torch.nn.Parameter:
    """The down-projection weight that ROME/MEMIT/FT rewrite at ``layer``.

    Returned as stored: ``[d_in=d_mlp, d_out=d_model]`` for Conv1D (GPT-2), ``[d_model, d_mlp]``
    for ``nn.Linear``. Use :func:`is_conv1d` to orient updates.
    """
    return module_for(model, "mlp_out", layer).weight


def is_conv1d(model: nn.Module) -> bool:
    return get_adapter(model).conv1d


def untuple(output):
    """Blocks and attention modules return tuples; the hidden state is always element 0."""
    return output[0] if isinstance(output, tuple) else output
