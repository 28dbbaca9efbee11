# Functions of editing_stats.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def uses_stats():
    """Whether a run method reads second-moment statistics (ROME, MEMIT, r-ROME)."""
    return any(get_method(m).needs_stats for m in config["editing"]["run_methods"])


def stats_corpus():
    """The text corpus of the statistics: the configured file, a corpus sampled from the model,
    the fact world's corpus for the toy, or none (a real model reading every layer from ROME's
    files, editing.stats.rome_npz_dir).

    A real model must never get statistics of the fact world's few thousand tokens of invented
    text: without a corpus, planning refuses a missing rome_npz_dir, and the job a layer missing
    from it.
    """
    corpus = EDIT_STATS["corpus"]
    if corpus == "sampled":
        return SAMPLED_CORPUS
    if corpus is not None:
        return corpus
    if uses_stats() and config["model"]["source"] != "toy" and EDIT_STATS["rome_npz_dir"] is None:
        raise WorkflowError(
            "editing.stats: set corpus (a text file, one document per line) or rome_npz_dir "
            "(ROME's published statistics) for ROME/MEMIT on a real model"
        )
    if config["model"]["source"] != "toy":
        npz_dir = EDIT_STATS["rome_npz_dir"]
        if uses_stats() and not Path(npz_dir).is_dir():
            raise WorkflowError(
                f"editing.stats.rome_npz_dir: {npz_dir!r} is not a directory; a real model's "
                "statistics come from it (every layer) or from editing.stats.corpus"
            )
        return []  # every layer from ROME's files: no corpus at all
    return f"{WORLD_DIR}/corpus.txt"


# A corpus sampled from the model, keyed by the model, its precision and the sampling settings.
SAMPLED_CORPUS = f"resources/corpora/sampled-{provenance.sampled_corpus_key(config)}.txt"


@cache
def layer_stats_dir():
    """``resources/stats/{editing.stats.name}-{key}``: the key covers the model, its precision, the
    corpus's content and every statistics setting (locedit.provenance.stats_key)."""
    return f"resources/stats/{provenance.stats_key(config, stats_corpus(), STATS_FORMAT)}"


def stats_identity():
    """What the statistics are of, recorded in their manifest and checked when planned."""
    return {
        "key": Path(layer_stats_dir()).name,
        "model": STUDY_IDENTITY["model"],
        "dtype": config["model"]["dtype"],
    }


def stats_problems():
    """Statistics made for another model must not be read as this one's: a manifest in the
    keyed directory or in editing.stats.rome_npz_dir (one of this workflow's directories, given
    to another study) that records another model is refused before anything runs."""
    if not uses_stats():
        return []
    problems = []
    planned = stats_identity()
    npz_dir = EDIT_STATS["rome_npz_dir"]
    for key, directory in (
        ("editing.stats", layer_stats_dir()),
        ("editing.stats.rome_npz_dir", npz_dir),
    ):
        record = provenance.read_record(Path(directory, "manifest.json")) if directory else None
        made = (record or {}).get("identity")
        if not made:
            continue
        if made["model"] != planned["model"] or (key == "editing.stats" and made != planned):
            problems.append(
                f"{key}: the statistics in {directory} were made for another model than "
                f"{CONFIG_ORIGIN} edits ({provenance.differences(made, planned)}); point "
                f"{key} elsewhere, or remove {directory}"
            )
    return problems


def layer_stats_manifest(method=None, layer=None):
    """The statistics every ROME/MEMIT job reads (all layers live under one manifest)."""
    return f"{layer_stats_dir()}/manifest.json"
