# Shared helpers: config validation, names, paths, code hashes, shards.
import ast
import hashlib
import math
from functools import cache
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


@cache
def package_imports(path):
    """Package modules (`locedit...`) the Python file `path` imports directly, also inside
    functions, as repository-relative paths (with the packages' `__init__.py` on the way)."""
    found = set()
    for node in ast.walk(ast.parse(Path(workflow.basedir, path).read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for parts in (n.split(".") for n in names if n.split(".")[0] == "locedit"):
            for k in range(1, len(parts) + 1):
                base = Path(workflow.basedir, "src", *parts[:k])
                for f in (base.with_suffix(".py"), base / "__init__.py"):
                    if f.is_file():
                        found.add(f.relative_to(workflow.basedir).as_posix())
    return frozenset(found)


def code_files(*paths, exclude=()):
    """`paths` (directories: their .py files) and every package module they import,
    transitively, less `exclude` (whose own imports are still followed)."""
    files = set()
    for p in paths:
        path = Path(workflow.basedir, p)
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files |= {f.relative_to(workflow.basedir).as_posix() for f in found}
    todo = [f for f in files if f.endswith(".py")]
    while todo:
        for f in package_imports(todo.pop()):
            if f not in files:
                files.add(f)
                todo.append(f)
    return sorted(files - set(exclude))


def code_hash(*paths, exclude=()):
    """Content hash of the scripts and package modules a rule runs (`code_files`).

    Snakemake does not track code a script imports, and its own code trigger is mtime-based
    (a checkout would rerun everything); the default profile drops that trigger and every rule
    carries this hash in `params:` instead, so editing a module reruns exactly the rules whose
    scripts import it (directly or through other modules).
    """
    h = hashlib.sha256()
    for f in code_files(*paths, exclude=exclude):
        h.update(f.encode())
        h.update(Path(workflow.basedir, f).read_bytes())
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
