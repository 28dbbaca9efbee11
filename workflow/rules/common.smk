# Shared helpers: config validation, names, paths, code hashes, shards.
import hashlib
import math
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

MODEL = config["model"]["name"]
DATASET = config["dataset"]["name"]
RESULTS = f"results/{MODEL}/{DATASET}"
TOY_MODEL_DIR = "resources/models/toy"
WORLD_DIR = "resources/world"


wildcard_constraints:
    model=MODEL,
    dataset=DATASET,
    shard=r"\d+",


def code_hash(*paths):
    """Content hash of scripts and package modules a rule runs.

    Snakemake does not track code a script imports, and its own code trigger is mtime-based
    (a checkout would rerun everything); the default profile drops that trigger and every rule
    carries this hash in `params:` instead, so editing a module reruns exactly its rules.
    """
    h = hashlib.sha256()
    for p in paths:
        path = Path(workflow.basedir, p)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(f.relative_to(workflow.basedir).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def model_source():
    """What `load_model` gets: the toy model's directory, a hub id or a local path."""
    src = config["model"]["source"]
    return TOY_MODEL_DIR if src == "toy" else src


def model_input():
    """The toy model as a rule input when it is built by this workflow, else nothing."""
    return [f"{TOY_MODEL_DIR}/config.json"] if config["model"]["source"] == "toy" else []


def model_params():
    """Model settings every model-loading rule passes to its script."""
    return {
        "source": model_source(),
        "dtype": config["model"]["dtype"],
        "device": config["model"]["device"],
    }


def n_shards(shard_size):
    """Shards over record positions; planning never reads data (see dataset.limit)."""
    return max(1, math.ceil(config["dataset"]["limit"] / shard_size))


def shard_ids(shard_size):
    return list(range(n_shards(shard_size)))


def shard_slice(shard, shard_size):
    """[start, stop) record positions of `shard`."""
    start = int(shard) * shard_size
    return [start, start + shard_size]
