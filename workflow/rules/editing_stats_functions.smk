# Functions of editing_stats.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def stats_corpus():
    """The text corpus of the statistics: configured file, else the fact world's corpus.

    A real model with neither a corpus nor ROME's files would get statistics of the fact world's
    few thousand tokens of invented text: refuse that at planning time.
    """
    corpus = EDIT_STATS["corpus"]
    if corpus == "sampled":
        return f"resources/corpora/{MODEL}/{EDIT_STATS['name']}.txt"
    if corpus is not None:
        return corpus
    uses_stats = any(get_method(m).needs_stats for m in config["editing"]["run_methods"])
    if uses_stats and config["model"]["source"] != "toy" and EDIT_STATS["rome_npz_dir"] is None:
        raise WorkflowError(
            "editing.stats: set corpus (a text file, one document per line) or rome_npz_dir "
            "(ROME's published statistics) for ROME/MEMIT on a real model"
        )
    return f"{WORLD_DIR}/corpus.txt"


def layer_stats_manifest(method=None, layer=None):
    """The statistics every ROME/MEMIT job reads (all layers live under one manifest)."""
    return f"resources/stats/{MODEL}/{EDIT_STATS['name']}/manifest.json"
