"""locedit: does localization (causal tracing) inform editing (ROME, MEMIT, FT)?

A Snakemake workflow reproducing and generalising Hase et al. (NeurIPS 2023). All model and data
code lives in this package; ``workflow/scripts`` are thin wrappers over it.
"""

__version__ = "0.1.0"
