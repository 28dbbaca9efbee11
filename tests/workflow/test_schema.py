"""The config schema documents every key (type, description, default), rejects unknown keys,
accepts the shipped configs, and a typo fails at parse time naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from tests.workflow.helpers import REPO
from tests.workflow.runs import run

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIGS = [
    "config.yaml", ".test/config.yaml", "config/paper_gptj.yaml", "config/paper_gpt2xl.yaml",
    "config/probes.yaml", "config/localizers.yaml", "config/smollm2.yaml",
]  # fmt: skip


#: Maps of optional overrides (e.g. editing.methods.rome.per_variant.<variant>): their entries and
#: the keys inside carry no defaults, since an override sets only what it names.
OVERRIDE_MAPS = {"per_variant"}
#: Open to sections of methods registered outside the schema; planning refuses any key that
#: is not a registered method (locedit.validation, tests/unit/test_registry.py).
OPEN_BY_DESIGN = {"editing.methods"}


def _walk(schema: dict, path: str, optional: bool = False):
    """Yield (dotted path, subschema, needs_default) of every property in the schema."""
    for key, sub in schema.get("properties", {}).items():
        in_override = optional or path.rstrip(".").rsplit(".", 1)[-1] in OVERRIDE_MAPS
        yield f"{path}{key}", sub, not in_override
        yield from _walk(sub, f"{path}{key}.", in_override)
        items = sub.get("items")
        if isinstance(items, dict) and items.get("type") == "object":
            # Keys of list items: the list has the default.
            yield from _walk(items, f"{path}{key}[].", True)


def test_schema_is_assembled_from_the_stage_schemas():
    proc = subprocess.run([sys.executable, str(REPO / "workflow/schemas/assemble_schema.py"),
                           "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_key_is_typed_described_and_defaulted():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["additionalProperties"] is False
    problems = []
    for path, sub, needs_default in _walk(schema, ""):
        is_override_entry = path.rsplit(".", 2)[-2:-1] and path.rsplit(".", 2)[-2] in OVERRIDE_MAPS
        if "description" not in sub and not is_override_entry:
            problems.append(f"{path}: no description")
        if "type" not in sub and "enum" not in sub and "oneOf" not in sub and "anyOf" not in sub:
            problems.append(f"{path}: no type")
        if needs_default and "default" not in sub:
            problems.append(f"{path}: no default")
        if sub.get("type") == "object" and "properties" in sub and path not in OPEN_BY_DESIGN and \
                sub.get("additionalProperties", True) is not False and "patternProperties" not in sub:
            problems.append(f"{path}: unknown keys are not rejected (additionalProperties: false)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    path = REPO / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    validate(yaml.safe_load(path.read_text()), str(SCHEMA))


def test_defaults_complete_an_empty_config():
    """Every section is filled from the schema's defaults (nested ones included)."""
    config: dict = {}
    validate(config, str(SCHEMA))
    full = yaml.safe_load((REPO / "config.yaml").read_text())

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
        return out

    # Open-ended maps (e.g. per-method hyperparameters keyed by name) may hold more keys than the
    # defaults name; everything else in config.yaml must come back from the defaults alone.
    missing = {k for k in keys(full) - keys(config) if not set(k.split(".")) & OVERRIDE_MAPS}
    assert not missing, f"keys of config.yaml without a schema default: {sorted(missing)}"


def test_unknown_key_is_rejected_naming_it(tmp_path):
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    bad = copy.deepcopy(config)
    bad["dataset"]["limt"] = 3
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run(tmp_path, "-n", configfile=path, check=False)
    assert proc.returncode != 0
    assert "limt" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("layers_per_job", 2, "On instance['editing']['layers_per_job']"),
        ("engine", {"batched": True, "row_budget": 0}, "On instance['editing']['engine']['row_budget']"),
        ("engine", {"max_facts": "many"}, "On instance['editing']['engine']['max_facts']"),
        ("engine", {"batch": False}, "('batch' was unexpected)"),
    ],
)
def test_bad_engine_settings_are_refused_by_the_schema(key, value, named):
    """The editing engine's keys are checked when the workflow is planned, before any job, and
    the error names the key (the instance path, not just the schema it prints)."""
    config = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))
    config["editing"][key] = value
    with pytest.raises(Exception) as err:
        validate(config, str(SCHEMA))
    assert named in str(err.value)


def test_analysis_metric_and_tracing_kind_choices_are_the_registrys():
    """The assembled schema's outcome-metric choices are locedit.analysis.METRICS (the probes'
    and the generation scores included) and its tracing kinds the registry's: assemble_schema.py
    writes them (its --check is tested with the schema)."""
    from locedit.analysis import METRICS
    from locedit.registry.kinds import TRACE_KINDS

    props = yaml.safe_load(SCHEMA.read_text())["properties"]
    for key in ("metrics", "robustness_metrics"):
        assert props["analysis"]["properties"][key]["items"]["enum"] == list(METRICS), key
    tracing = props["tracing"]["properties"]
    assert tracing["runs"]["items"]["properties"]["kind"]["enum"] == list(TRACE_KINDS)
    assert tracing["peak_run"]["properties"]["kind"]["enum"] == list(TRACE_KINDS)
