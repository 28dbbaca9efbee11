# Functions of data.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def data_targets():
    return [f"{RESULTS}/facts.parquet"]


def dataset_input():
    """The raw dataset file the records are prepared from."""
    src = config["dataset"]["source"]
    if src == "synthetic":
        return f"{WORLD_DIR}/records.json"
    if src == "url":
        return f"resources/data/{DATASET}.json"
    return config["dataset"]["path"]


def dataset_format():
    # The fact world is written in CounterFact format whatever dataset.format says.
    if config["dataset"]["source"] == "synthetic":
        return "counterfact"
    return config["dataset"]["format"]


def validation_candidate():
    """Where validate_inputs writes its report: under a key of everything the report depends on
    (what the study's names stand for, and the validation's settings)."""
    key = provenance.digest(
        {
            "identity": STUDY_IDENTITY,
            "format": dataset_format(),
            "limit": config["dataset"]["limit"],
            "seed": config["seed"],
            "generate": config["filter"]["max_new_tokens"],
        }
    )
    return f"results/{{model}}/{{dataset}}/validation/{key}.json"


def gguf_input():
    """The GGUF file import_gguf_model reads (a packaged model's download, or the file itself)."""
    src = config["model"]["source"]
    return fetched_path(src) if src in PACKAGED else src


def gguf_sha256():
    """The GGUF file's content hash (a packaged model's pinned one): the import reruns by value."""
    src = config["model"]["source"]
    return source_sha256(src) if is_gguf_source(src) else None


# Wildcard patterns of the GGUF rules: exactly this study's files, so that neither rule can
# claim another model's directory (the toy's config.json lies under resources/models/ too).
NO_MATCH = "(?!)"


def gguf_import_key():
    src = config["model"]["source"]
    return re.escape(Path(import_dir(src)).name) if is_gguf_source(src) else NO_MATCH


def gguf_download_stem():
    src = config["model"]["source"]
    return re.escape(Path(fetched_path(src)).stem) if src in PACKAGED else NO_MATCH
