"""What made each artefact: content keys for shared artefacts, and what a study's names stand for.

Artefacts several studies can share (the fact world, the toy model, a sampled corpus, ROME/MEMIT
statistics) live under a key derived from everything that determines them, so two studies share
one only when it is identical by construction and never overwrite each other's. A study's own
results live under the names its config gives (``results/{model.name}/{dataset.name}``); the
published validation report records which model and dataset those names stood for
(:func:`study_identity`), and planning refuses a config that gives ``model.name`` to another model
(:func:`identity_conflicts`) or whose model files changed on disk since (:func:`changed_files`).

File hashes come from :func:`locedit.files.cached_file_sha256`: planning hashes a multi-GB model
or corpus once, not on every ``snakemake`` call.

Plain Python (no torch, no pandas): planning imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from locedit.files import cached_file_sha256
from locedit.gguf import is_gguf_source, source_sha256

#: Hex digits of an artefact key: 48 bits, no collision among a lab's studies in practice.
KEY_LENGTH = 12


def canonical_json(value) -> str:
    """``value`` as JSON with sorted keys and no whitespace: equal settings, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value, n: int = KEY_LENGTH) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:n]


# --- keys of shared artefacts ----------------------------------------------------------------


def world_key(world: Mapping, seed: int) -> str:
    """The fact world's key: its settings and the master seed (nothing else shapes it)."""
    return digest({"world": world, "seed": seed})


def toy_key(world: Mapping, toy: Mapping, seed: int) -> str:
    """The toy model's key: the world it is trained on, its own settings and the master seed."""
    return digest({"world": world_key(world, seed), "toy_model": toy, "seed": seed})


def world_dir(config: Mapping) -> str:
    return f"resources/world/{world_key(config['world'], config['seed'])}"


def toy_dir(config: Mapping) -> str:
    return f"resources/models/toy-{toy_key(config['world'], config['toy_model'], config['seed'])}"


def toy_identity(config: Mapping) -> dict:
    """The toy model of ``config``: its key and the settings it is derived from."""
    made_from = {"world": config["world"], "toy_model": config["toy_model"], "seed": config["seed"]}
    key = toy_key(config["world"], config["toy_model"], config["seed"])
    return {"source": "toy", "key": key, "settings": made_from}


def toy_dir_of_file(config: str | os.PathLike = "config.yaml") -> Path:
    """The toy model directory a workflow config file's settings make, next to the file (the
    one-fact API's ``load("toy")``; every world and toy_model key set, as config.yaml sets them)."""
    import yaml

    return Path(config).parent / toy_dir(yaml.safe_load(Path(config).read_text()) or {})


def model_identity(config: Mapping) -> dict:
    """Which model ``model.name`` stands for: the toy's settings, a GGUF file's content hash, a
    local directory's resolved path (its files are checked by :func:`changed_files`) or a hub id.
    Precision and device are settings of a study, not of the model."""
    src = config["model"]["source"]
    if src == "toy":
        return toy_identity(config)
    if is_gguf_source(src):
        return {"source": src, "sha256": source_sha256(src)}
    path = Path(src).expanduser()
    if path.is_dir():
        return {"source": "directory", "path": str(path.resolve())}
    return {"source": "hub", "id": src, "revision": config["model"].get("revision")}


def dataset_identity(config: Mapping) -> dict:
    """Which dataset ``dataset.name`` stands for: the fact world's key, a file's content hash,
    or a URL with its expected hash."""
    d = config["dataset"]
    if d["source"] == "synthetic":
        return {"source": "synthetic", "world": world_key(config["world"], config["seed"]),
                "settings": {"world": config["world"], "seed": config["seed"]}}
    if d["source"] == "url":
        return {"source": "url", "url": d["url"], "sha256": d["sha256"]}
    path = Path(d["path"]).expanduser()
    return {"source": "path", "sha256": cached_file_sha256(path) if path.is_file() else None}


def study_identity(config: Mapping) -> dict:
    """What ``results/{model.name}/{dataset.name}`` holds results of."""
    return {"model": model_identity(config), "dataset": dataset_identity(config)}


def corpus_identity(config: Mapping, corpus_path: str) -> dict:
    """The statistics corpus: the fact world's (by key), a sampled one (by its key), a file's
    content hash, or none (a real model's statistics all from ROME's files)."""
    stats = config["editing"]["stats"]
    if stats["corpus"] is None and config["model"]["source"] != "toy":
        return {"rome_npz_only": True}  # every layer from editing.stats.rome_npz_dir
    if stats["corpus"] is None:
        return {"world": world_key(config["world"], config["seed"])}
    if stats["corpus"] == "sampled":
        return {"sampled": sampled_corpus_key(config)}
    path = Path(corpus_path).expanduser()
    # A missing file stops the run at planning (Snakemake names the missing input).
    return {"sha256": cached_file_sha256(path) if path.is_file() else None}


def sampled_corpus_key(config: Mapping) -> str:
    """A corpus sampled from the model: the model, its precision and the sampling settings."""
    return digest({"model": model_identity(config), "dtype": config["model"]["dtype"],
                   "sampled": config["editing"]["stats"]["sampled"]})


def stats_key(config: Mapping, corpus_path: str, stats_format: int) -> str:
    """``{editing.stats.name}-{key}``: the name labels the directory for people; the key covers
    the model, its precision, the corpus's content and every statistics setting."""
    stats = dict(config["editing"]["stats"])
    name = stats.pop("name")
    return name + "-" + digest({
        "model": model_identity(config), "dtype": config["model"]["dtype"],
        "corpus": corpus_identity(config, corpus_path), "stats": stats, "format": stats_format,
    })


# --- checks -----------------------------------------------------------------------------------


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k in sorted(value, key=str):
            out.update(_flat(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differences(recorded: Mapping, planned: Mapping, shown: int = 6) -> str:
    """``key: old -> new`` for the leaves that differ, at most ``shown`` of them."""
    a, b = _flat(recorded), _flat(planned)
    diffs = [f"{k}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k, "(none)") != b.get(k, "(none)")]
    more = f"; and {len(diffs) - shown} more" if len(diffs) > shown else ""
    return "; ".join(diffs[:shown]) + more


def identity_conflicts(recorded: Mapping | None, planned: Mapping, results: str, origin: str) -> list[str]:
    """Problems when ``results`` (recorded: the published report's identity) would be overwritten
    by a study of another model under the same ``model.name`` (planned: this config's identity).

    The dataset is not held to its name: a study's own dataset file, corrected and rerun, reruns
    what it invalidates (and a rejected file changes nothing, see the validation rules)."""
    old = (recorded or {}).get("model")
    new = planned["model"]
    if old is None or old == new:
        return []
    return [
        f"model.name: {results} holds the results of another model than {origin} gives that name "
        f"to ({differences(old, new)}); running would overwrite them. Give this study another "
        f"model.name, or delete {results} to recompute it"
    ]


#: The files of a ``save_pretrained`` directory that make the model (weights, config, tokenizer);
#: records beside them (a toy's training metrics with their timings, an import's log) do not.
MODEL_FILE_PATTERNS = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "*.bin",
    "*.bin.index.json", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "*.model", "*.tiktoken",
)


def model_files(root: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` of the files that make a model directory (MODEL_FILE_PATTERNS)."""
    root = Path(root)
    found = {p for pattern in MODEL_FILE_PATTERNS for p in root.glob(pattern) if p.is_file()}
    return {p.name: cached_file_sha256(p) for p in sorted(found)}


def changed_files(recorded: Mapping[str, str], root: str | os.PathLike) -> list[str]:
    """The files of ``recorded`` (``model_files`` of an earlier day) that are gone or differ."""
    changed = []
    for rel, sha in sorted(recorded.items()):
        path = Path(root, rel)
        if not path.is_file() or cached_file_sha256(path) != sha:
            changed.append(rel)
    return changed


def read_record(path: str | os.PathLike) -> dict | None:
    """A JSON record, or None where there is none (or an empty stand-in, as ``--touch`` leaves)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


#: Packages whose versions a provenance record lists.
PACKAGES = (
    "locedit", "torch", "transformers", "tokenizers", "snakemake", "numpy", "pandas", "pyarrow",
    "statsmodels", "seaborn", "gguf",
)


def software_versions() -> dict[str, str | None]:
    """Python's and PACKAGES' versions in this environment (None: not installed)."""
    import platform
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance_record(study: Mapping, report: Mapping) -> dict:
    """``provenance.json``: the study as planned (names, identity, artefacts, config and its
    hash), the content hashes validation recorded (model files, dataset file, records) and the
    software versions."""
    return {
        **study,
        "model_files": report.get("model_files"),
        "dataset_sha256": report.get("dataset_sha256"),
        "records_sha256": report.get("sha256"),
        "software": software_versions(),
    }
