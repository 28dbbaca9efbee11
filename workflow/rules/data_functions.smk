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
