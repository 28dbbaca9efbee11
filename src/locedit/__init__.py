"""locedit: does localization (causal tracing) inform editing (ROME, MEMIT, FT)?

A Snakemake workflow reproducing and generalising Hase et al. (NeurIPS 2023). All model and data
code lives in this package; ``workflow/scripts`` are thin wrappers over it. One fact from
Python (:mod:`locedit.api`)::

    import locedit
    lm = locedit.load("toy")   # or "smollm2-135m", a hub id, a save_pretrained directory
    locedit.knows(lm, "The native language of {} is", "Masir Tupul", "French")  # a world fact
    result = locedit.trace(lm, "The native language of {} is", "Masir Tupul", "French")
    row = locedit.edit(lm, "rome", 1, "The native language of {} is", "Masir Tupul",
                       target_new="Swedish", target_true="French")
"""

import importlib

__version__ = "0.1.0"

#: The one-fact API, imported on first use: the workflow's planning imports this package and
#: must not pay for torch.
_API = ("load", "knows", "trace", "plot_trace", "peak", "edit", "config_hparams", "LoadedModel")


def __getattr__(name: str):
    if name in _API:
        # By name, not an import statement: every workflow script imports this package, and the
        # rules' code hashes (common.smk) follow import statements, also inside functions.
        return getattr(importlib.import_module("locedit.api"), name)
    raise AttributeError(f"module 'locedit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
