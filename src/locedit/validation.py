"""Checks of the configuration that need no model: the schema, key consistency, and the model's
shape read from its ``config.json``.

They run when the workflow is planned (``workflow/rules/common.smk``), so a wrong value stops
the run before anything is scheduled, and so nothing is deleted; the records are checked by rule
``validate_inputs`` (they may not exist yet when planning). Plain Python, no torch: planning
imports this module on every ``snakemake`` call.

Every function returns a list of problems, each starting with the config key path at fault, so
that a run reports all of them at once.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from locedit.adapters import config_shape
from locedit.gguf import PACKAGED, gguf_shape, import_dir, is_gguf_source

#: A Hugging Face hub id: ``name`` or ``owner/name`` (letters, digits, ``-_.``).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


class ConfigError(ValueError):
    """The configuration is inconsistent; the message lists every key at fault."""


@dataclass(frozen=True)
class ModelShape:
    """What the checks need to know of the model, read without loading it."""

    architecture: str
    n_layers: int
    n_ctx: int
    origin: str  # where it was read (for messages)


def canonical(value):
    """``value`` with every mapping's keys sorted, recursively (lists keep their order).

    Snakemake compares ``params`` by ``repr``: the same config with its keys in another order
    (as a sweep script's ``yaml.safe_dump`` writes it) must not rerun anything.
    """
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def canonicalize_in_place(config: dict) -> None:
    """Reorder ``config`` (Snakemake's own object, so every reference sees it) canonically."""
    items = canonical(config)
    config.clear()
    config.update(items)


def source_kind(source: str) -> str:
    """``toy``, ``gguf`` (a ``.gguf`` file or a packaged model's name, :mod:`locedit.gguf`),
    ``dir`` (an existing directory), ``hub`` (a hub id) or ``missing`` (a path that does not
    exist and is not a hub id)."""
    if source == "toy":
        return "toy"
    if is_gguf_source(source):
        return "gguf" if source in PACKAGED or Path(source).expanduser().is_file() else "missing"
    if Path(source).expanduser().is_dir():
        return "dir"
    looks_like_path = source.startswith(("/", ".", "~")) or source.count("/") > 1
    return "missing" if looks_like_path or not HUB_ID.match(source) else "hub"


def shape_from_file(path: str | Path, key: str = "model.source") -> tuple[ModelShape | None, list[str]]:
    """The shape in a ``config.json`` (``None`` and the problems when it is unreadable)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, [f"{key}: cannot read {path}: {err}"]
    try:
        arch, depth, n_ctx = config_shape(cfg)
    except KeyError as err:
        msg = err.args[0] if err.args and " " in str(err.args[0]) else f"no {err} in it"
        return None, [f"{key}: {path}: {msg}"]
    return ModelShape(arch, depth, n_ctx, str(path)), []


def planned_model_shape(config: Mapping) -> tuple[ModelShape | None, list[str]]:
    """The model's shape as far as planning can know it, and problems with ``model.source``.

    The toy's comes from ``toy_model``; a directory's from its ``config.json``; a hub model's from
    the local hub cache (at ``model.revision``), else fetched (``config.json`` alone, a few kB).
    """
    source = config["model"]["source"]
    kind = source_kind(source)
    if kind == "toy":
        toy = config["toy_model"]
        return ModelShape("GPT2LMHeadModel", toy["n_layer"], toy["n_positions"], "toy_model"), []
    if kind == "gguf":
        return gguf_model_shape(source)
    if kind == "missing" and is_gguf_source(source):
        return None, [f"model.source: no such GGUF file {source!r} (or a packaged model's name: "
                      f"{', '.join(sorted(PACKAGED))})"]
    if kind == "missing":
        return None, [
            f"model.source: no such directory {source!r} (and not a hub id such as "
            "'EleutherAI/gpt-j-6B'); point it at a directory written by save_pretrained"
        ]
    if kind == "dir":
        cfg = Path(source).expanduser() / "config.json"
        if not cfg.is_file():
            return None, [
                f"model.source: directory {source!r} has no config.json (write the model with "
                "save_pretrained)"
            ]
        return shape_from_file(cfg)
    revision = config["model"].get("revision")
    if not _cached_hub_config(source, revision) and not hub_reachable():
        # Planning works offline (dry runs of the paper presets); the jobs cannot, and
        # validate_inputs then fails in one line (fetched_model_shape).
        print(f"locedit: model.source {source!r} is a hub id whose config.json is not cached and "
              "the hub is unreachable: edit layers are not checked against its depth",
              file=sys.stderr)
        return None, []
    return fetched_model_shape(source, revision)


def gguf_model_shape(source: str) -> tuple[ModelShape | None, list[str]]:
    """A GGUF source's shape: its import's ``config.json`` once imported, else the packaged
    entry's, else the file's header (which also rejects a file transformers cannot read)."""
    imported = Path(import_dir(source), "config.json")
    if imported.is_file():
        return shape_from_file(imported)
    if source in PACKAGED:
        p = PACKAGED[source]
        return ModelShape(p.architecture, p.n_layers, p.n_ctx, f"packaged model {source}"), []
    shape, problems = gguf_shape(source)
    if shape is None:
        return None, problems
    return ModelShape(*shape, source), []


def _layers_in_range(key: str, layers: Iterable[int], shape: ModelShape) -> list[str]:
    bad = sorted(int(x) for x in layers if not 0 <= int(x) < shape.n_layers)
    if not bad:
        return []
    return [
        f"{key}: layer(s) {bad} outside the model's {shape.n_layers} layers "
        f"(0-indexed, 0..{shape.n_layers - 1}; from {shape.origin})"
    ]


def _traced(config: Mapping) -> set[tuple[str, int]]:
    return {(r["kind"], int(r["window"])) for r in config["tracing"]["runs"]}


def config_problems(config: Mapping, shape: ModelShape | None = None) -> list[str]:
    """Every inconsistency of ``config`` (validated against the schema, defaults filled in);
    with ``shape``, also the layer settings against the model's depth. The editing methods'
    settings are checked against the registry by
    :func:`locedit.registry.methods.config_problems` (kept apart: every job imports this module,
    and a registry change must not rerun them)."""
    problems: list[str] = []
    revision = config["model"].get("revision")
    if revision is not None and source_kind(config["model"]["source"]) not in ("hub", "missing"):
        problems.append(f"model.revision: {revision!r} is for a hub id; model.source "
                        f"{config['model']['source']!r} has no revisions (set it to null)")
    ds = config["dataset"]
    if ds["source"] == "path":
        if not ds.get("path"):
            problems.append("dataset.path: required when dataset.source is 'path' (a local file)")
        elif not Path(ds["path"]).expanduser().is_file():
            problems.append(f"dataset.path: no such file {ds['path']!r}")
    stats = config["editing"]["stats"]
    if stats.get("corpus") not in (None, "sampled") and not Path(stats["corpus"]).expanduser().is_file():
        problems.append(f"editing.stats.corpus: no such file {stats['corpus']!r}")
    if (stats.get("rome_npz_dir") and stats.get("corpus") is not None
            and not Path(stats["rome_npz_dir"]).expanduser().is_dir()):
        # A warning, not an error: with a corpus every layer can be computed. Without one, a
        # real model's planning refuses the missing folder (editing_stats_functions.smk).
        print(f"locedit: editing.stats.rome_npz_dir {stats['rome_npz_dir']!r} does not exist (yet): "
              "compute_layer_stats will compute every layer from editing.stats.corpus", file=sys.stderr)
    if ds["source"] == "url" and not ds.get("url"):
        problems.append("dataset.url: required when dataset.source is 'url'")

    traced = _traced(config)
    tr, an, ed = config["tracing"], config["analysis"], config["editing"]
    runs = ", ".join(f"{k}/{w}" for k, w in sorted(traced)) or "none"
    peak = (tr["peak_run"]["kind"], int(tr["peak_run"]["window"]))
    if peak not in traced:
        problems.append(f"tracing.peak_run: {peak[0]}/{peak[1]} is not in tracing.runs ({runs})")
    if (an["trace_kind"], int(an["window"])) not in traced:
        problems.append(
            f"analysis.window: {an['trace_kind']}/{an['window']} (analysis.trace_kind/window) is "
            f"not traced; tracing.runs has {runs}"
        )
    if an.get("default_layer") is not None and an["default_layer"] not in ed["layers"]:
        problems.append(
            f"analysis.default_layer: {an['default_layer']} is not an edit layer "
            f"(editing.layers: {list(ed['layers'])})"
        )
    for key, items in (("editing.layers", [int(x) for x in ed["layers"]]),
                       ("tracing.runs", [f"{r['kind']}/{r['window']}" for r in tr["runs"]])):
        dups = sorted({x for x in items if items.count(x) > 1}, key=str)
        if dups:
            problems.append(f"{key}: listed more than once: {dups}")

    if shape is not None:
        problems += _layers_in_range("editing.layers", ed["layers"], shape)
        stats_layers = ed["stats"]["layers"]
        if stats_layers != "all":
            problems += _layers_in_range("editing.stats.layers", stats_layers, shape)
    return problems


def problem_report(problems: list[str], where: str, shown: int | None = None) -> str:
    """``problems`` as one message, one indented line each (the first ``shown`` when given):
    the format of every input error (config, records, validate_inputs)."""
    lines = "\n  ".join(problems[:shown])
    more = f"\n  … and {len(problems) - shown} more" if shown is not None and len(problems) > shown else ""
    return f"{len(problems)} problem(s) in {where}:\n  {lines}{more}"


def raise_problems(problems: list[str], where: str) -> None:
    """Raise :class:`ConfigError` listing ``problems`` (no-op when empty)."""
    if problems:
        raise ConfigError(problem_report(problems, where))


def fetched_model_shape(source: str, revision: str | None = None) -> tuple[ModelShape | None, list[str]]:
    """The shape of a directory's or hub model's config (a hub model: only its ``config.json``
    at ``revision``, from the local cache or fetched once; offline, one line says what to do
    instead)."""
    if source_kind(source) == "dir":
        return shape_from_file(Path(source).expanduser() / "config.json")
    cached = _cached_hub_config(source, revision)
    if cached:
        return shape_from_file(cached)
    advice = (
        "Without a network, point model.source at a local directory written by save_pretrained, "
        f"or fetch the model once where there is one (huggingface-cli download {source})"
    )
    if not hub_reachable():  # fail in one line, not after the hub client's retries
        return None, [f"model.source: hub model {source!r} is not cached and the hub is "
                      f"unreachable. {advice}"]
    from huggingface_hub import hf_hub_download

    try:
        return shape_from_file(hf_hub_download(source, "config.json", revision=revision, etag_timeout=5))
    except Exception as err:  # noqa: BLE001 - any failure means the same advice
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return None, [f"model.source: cannot fetch the config of hub model {source!r} ({first}). {advice}"]


def _cached_hub_config(source: str, revision: str | None = None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json", revision=revision)
    return cached if isinstance(cached, str) else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection within ``timeout`` s (False when HF_HUB_OFFLINE
    is set; True behind an HTTPS proxy, which a direct connection cannot judge)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _subschema(schema: Mapping, path: list) -> Mapping:
    """The schema of the value at ``path`` (through ``properties`` only; {} when unknown)."""
    for key in path:
        schema = schema.get("properties", {}).get(key, {}) if isinstance(key, str) else {}
    return schema


def coerce_overrides(config: dict, overrides: Mapping, schema: Mapping) -> None:
    """Give nested ``--config`` values their YAML types in ``config``, in place.

    Snakemake parses ``--config 'tracing={samples: 5}'`` with YAML's BaseLoader, so ``5`` arrives
    as the string ``'5'`` (top-level ``key=5`` is typed). Strings inside override mappings and
    lists are re-read as YAML unless the schema says the key is a string.
    """
    import yaml

    def fix(value, path):
        if isinstance(value, dict):
            return {k: fix(v, path + [k]) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v, path + [None]) for v in value]
        if isinstance(value, str) and _subschema(schema, path).get("type") != "string":
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
        return value

    def walk(cfg: dict, over: Mapping, path: list):
        for key, value in over.items():
            if key not in cfg:
                continue
            if isinstance(value, dict) and isinstance(cfg[key], dict):
                walk(cfg[key], value, path + [key])
            elif path or isinstance(value, (dict, list)):
                cfg[key] = fix(cfg[key], path + [key])

    walk(config, overrides, [])


def schema_problems(config: Mapping, schema: Mapping) -> list[str]:
    """Schema violations of ``config``, one short line each: the key path, what was expected,
    and for an unknown key the closest valid one (instead of the whole schema)."""
    import difflib

    import jsonschema

    problems = []
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed), key=str):
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(allowed)}"
                problems.append(f"{path + '.' if path else ''}{key}: unknown key; {hint}")
            continue
        if err.context:  # oneOf/anyOf: the branch that came closest says the most
            err = jsonschema.exceptions.best_match(err.context)
            path = ".".join(str(p) for p in err.absolute_path)
        message = err.message if len(err.message) < 200 else err.message[:200] + "…"
        expected = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        problems.append(
            f"{path or '<top level>'}: {message}" + (f" (expected: {expected})" if expected else "")
        )
    return problems
