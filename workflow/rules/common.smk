# Shared helpers: config validation, names, paths, code hashes, shards.
import ast
import hashlib
import math
import re
import sys
from functools import cache
from pathlib import Path

import yaml
from snakemake.utils import validate

# Planning and every job use this checkout's package (the code the code hashes are taken of),
# also in a conda env that has only the dependencies (envs/locedit.yaml).
sys.path.insert(0, str(Path(workflow.basedir, "src")))
from locedit.planning import cuda_present, export_package_path, report_landing_page
from locedit.gguf import PACKAGED, fetched_path, import_dir, is_gguf_source, source_sha256
from locedit import provenance

export_package_path(Path(workflow.basedir, "src"))
# The study's vocabulary (locedit.registry), shared by every rule file.
from locedit.registry.analysis import FIGURES, figures_of
from locedit.registry.methods import METHODS, get_method, job_methods, tuned_sections
from locedit.registry.methods import config_problems as method_config_problems
from locedit.registry.rules import (
    EDIT_RULES,
    MODEL_RULES,
    UNLOCKING_PRIORITY,
    UNLOCKING_RULES,
    edit_priority,
)
from locedit.registry.kinds import estimate_pairs, replaced_kinds
from locedit.registry.variants import VARIANTS
from locedit.editing.hparams import merge_variant
from locedit.validation import (
    canonicalize_in_place,
    coerce_overrides,
    config_problems,
    planned_model_shape,
    raise_problems,
    schema_problems,
)

CONFIG_SCHEMA = yaml.safe_load(
    Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text()
)
CONFIG_ORIGIN = "the config ({})".format(
    ", ".join(
        [str(f) for f in workflow.configfiles]
        + (["--config"] if workflow.config_settings.overwrite_config else [])
    )
)
coerce_overrides(config, workflow.config_settings.overwrite_config, CONFIG_SCHEMA)
# Every problem at once, one line each (Snakemake's own message prints the whole schema).
raise_problems(schema_problems(config, CONFIG_SCHEMA), CONFIG_ORIGIN)
validate(config, schema="../schemas/config.schema.yaml")  # fills in the defaults
# Params compare by repr: the same values in another key order (yaml.safe_dump sorts) must not rerun.
canonicalize_in_place(config)
# Cross-key and model-shape checks before anything is scheduled, so a wrong value can neither
# start a job nor delete a good output; validate_inputs repeats them where planning cannot see.
PLANNED_SHAPE, _shape_problems = planned_model_shape(config)
_depth = None if PLANNED_SHAPE is None else PLANNED_SHAPE.n_layers
raise_problems(
    _shape_problems
    + config_problems(config, PLANNED_SHAPE)
    + method_config_problems(config["editing"], _depth),
    CONFIG_ORIGIN,
)

MODEL = config["model"]["name"]
DATASET = config["dataset"]["name"]
RESULTS = f"results/{MODEL}/{DATASET}"
# The world and the toy live under keys of the settings that make them (locedit.provenance): two
# studies share them only when they are identical, and none can overwrite another's.
TOY_MODEL_DIR = provenance.toy_dir(config)
WORLD_DIR = provenance.world_dir(config)
# Which model and dataset this study's names stand for (recorded by validation, checked below).
STUDY_IDENTITY = provenance.study_identity(config)


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
    """What `load_model` gets: the toy model's or the imported GGUF model's directory, a hub id
    or a local path."""
    src = config["model"]["source"]
    if src == "toy":
        return TOY_MODEL_DIR
    return import_dir(src) if is_gguf_source(src) else src


def model_input():
    """The model as a rule input when this workflow builds it (the toy, a GGUF import), else
    nothing."""
    src = config["model"]["source"]
    if src == "toy" or is_gguf_source(src):
        return [f"{model_source()}/config.json"]
    return []


def validated_model_input():
    """The model input of every job that loads a model for the study: the model and the records'
    published validation report, so that none starts before, or after a failed, validation.

    The report is republished only when what the records depend on changes (dataset, model,
    filter length), i.e. when these jobs rerun anyway, and never by a rejected input (data.smk).
    compute_layer_stats is the exception: it needs only the model (checked when planned), and
    its protected output must not be rerun by a dataset change.
    """
    return model_input() + [f"{RESULTS}/validation.json"]


def model_dir():
    """The model's directory when it is one (the toy, a GGUF import, a local directory), else
    None (a hub id)."""
    src = model_source()
    return src if model_input() or Path(src).expanduser().is_dir() else None


def study_problems():
    """Refusals before anything runs when this study would overwrite results another model made
    under the same model.name (the published report records what RESULTS holds), or when the
    model's files changed on disk since RESULTS was made from them."""
    record = provenance.read_record(f"{RESULTS}/validation.json")
    if record is None:
        return []
    problems = provenance.identity_conflicts(
        record.get("identity"), STUDY_IDENTITY, RESULTS, CONFIG_ORIGIN
    )
    files, directory = record.get("model_files"), model_dir()
    if problems or not files or directory is None:
        return problems
    # A model this workflow builds and has rebuilt since (config.json newer than the report) is
    # the workflow's own change: the model jobs rerun anyway.
    config_json = Path(directory, "config.json")
    if (
        model_input()
        and config_json.is_file()
        and (config_json.stat().st_mtime > Path(RESULTS, "validation.json").stat().st_mtime)
    ):
        return problems
    changed = provenance.changed_files(files, directory)
    if changed:
        problems.append(
            f"model.source: {len(changed)} file(s) of {directory} changed since {RESULTS} was made "
            f"from them ({', '.join(changed[:3])}): those results describe another model. Restore "
            f"the files, or give this study another model.name, or delete {RESULTS} to recompute it"
        )
    return problems


raise_problems(study_problems(), CONFIG_ORIGIN)


def model_gpus():
    """model.gpus_per_job resolved: auto = 1 when the device resolves to CUDA here, else 0."""
    n = config["model"]["gpus_per_job"]
    if n != "auto":
        return int(n)
    device = config["model"]["device"]
    return int(device.startswith("cuda") or (device == "auto" and cuda_present()))


def declare_model_gpus():
    """Give every model-loading rule (MODEL_RULES) its `gpu` resource, unless a
    profile's set-resources did. profiles/slurm gives exactly these a GPU (tested)."""
    gpus = model_gpus()
    for rule_ in workflow.rules:
        if rule_.name in MODEL_RULES and "gpu" not in rule_.resources:
            rule_.resources.update({"gpu": gpus})


def declare_priorities():
    """Scheduling order (locedit.registry.rules): the rules edit jobs wait on first, then edit
    jobs by their cost, the rest at Snakemake's default 0. Order only, never a result."""
    for rule_ in workflow.rules:
        if rule_.name in UNLOCKING_RULES:
            rule_.priority = UNLOCKING_PRIORITY
        elif rule_.name in EDIT_RULES:
            rule_.priority = lambda wildcards: edit_priority(wildcards.method, wildcards.variant)


def model_params():
    """Model settings every model-loading rule passes to its script."""
    revision = config["model"]["revision"]
    return {
        "source": model_source(),
        "dtype": config["model"]["dtype"],
        "device": config["model"]["device"],
        **({"revision": revision} if revision is not None else {}),
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
