"""Config mistakes found before anything runs: each named by its key path, all listed at once."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from locedit.validation import (
    ModelShape,
    canonical,
    coerce_overrides,
    config_problems as config_only_problems,
    planned_model_shape,
    schema_problems,
    source_kind,
)
from locedit.registry.methods import config_problems as method_problems
from tests.conftest import REPO
from tests.workflow.helpers import reverse_mappings

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
SHAPE = ModelShape("GPT2LMHeadModel", 12, 128, "toy_model")


def config_problems(config, shape=None):
    """Every planning check, as common.smk runs them (the config's and the registry's)."""
    depth = None if shape is None else shape.n_layers
    return config_only_problems(config, shape) + method_problems(config["editing"], depth)


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_clean(config):
    assert schema_problems(config, SCHEMA) == []
    assert config_problems(config, SHAPE) == []


def _set(cfg, dotted, value):
    *parents, last = dotted.split(".")
    for key in parents:
        cfg = cfg[key]
    cfg[last] = value


#: (dotted key, value, text the problem line must start with)
CROSS_KEY_DEFECTS = [
    ("analysis.window", 7, "analysis.window: mlp/7 (analysis.trace_kind/window) is not traced"),
    ("analysis.trace_kind", "attn", "analysis.window: attn/5"),
    ("tracing.peak_run", {"kind": "mlp", "window": 2}, "tracing.peak_run: mlp/2 is not in tracing.runs"),
    ("analysis.default_layer", 3, "analysis.default_layer: 3 is not an edit layer"),
    ("editing.layers", [0, 12], "editing.layers: layer(s) [12] outside the model's 12 layers"),
    ("editing.layers", [-1, 2], "editing.layers: layer(s) [-1] outside"),
    ("editing.stats.layers", [0, 1, 2, 12], "editing.stats.layers: layer(s) [12] outside"),
    ("editing.stats.layers", [0, 1], "editing.stats.layers: ROME/MEMIT edits need the statistics of layer(s) [2, 3, 4, 5, 6, 7, 8, 9]"),
    ("dataset.source", "path", "dataset.path: required when dataset.source is 'path'"),
    ("editing.run_methods", ["rome", "mend"], "editing.run_methods: ['mend'] are not registered"),
    ("editing.layers", [0, 1, 1], "editing.layers: listed more than once: [1]"),
    ("tracing.runs", [{"kind": "mlp", "window": 5}, {"kind": "mlp", "window": 5}],
     "tracing.runs: listed more than once: ['mlp/5']"),
]


@pytest.mark.parametrize("key, value, message", CROSS_KEY_DEFECTS, ids=[f"{d[0]}={d[1]}" for d in CROSS_KEY_DEFECTS])
def test_cross_key_defect_is_named(config, key, value, message):
    _set(config, key, value)
    problems = config_problems(config, SHAPE)
    assert any(p.startswith(message) for p in problems), problems


def test_missing_dataset_file(config, tmp_path):
    config["dataset"].update(source="path", path=str(tmp_path / "nope.json"))
    assert config_problems(config) == [f"dataset.path: no such file '{tmp_path / 'nope.json'}'"]


def test_missing_statistics_inputs(config, tmp_path, capsys):
    config["editing"]["stats"].update(corpus=str(tmp_path / "wiki.txt"), rome_npz_dir=str(tmp_path / "npz"))
    assert config_problems(config) == [f"editing.stats.corpus: no such file '{tmp_path / 'wiki.txt'}'"]
    # ROME's published files are named before they are downloaded (the presets): a warning
    assert "editing.stats.rome_npz_dir" in capsys.readouterr().err


def test_all_problems_at_once(config):
    config["analysis"]["window"] = 7
    config["editing"]["layers"] = [13]
    assert len(config_problems(config, SHAPE)) == 2


SCHEMA_DEFECTS = [
    ("seeed", 1, "seeed: unknown key; did you mean 'seed'?"),
    ("tracing.sampels", 5, "tracing.sampels: unknown key; did you mean 'samples'?"),
    ("tracing.samples", "five", "tracing.samples: 'five' is not of type 'integer'"),
    ("model.name", "..", "model.name: '..' does not match"),
    ("dataset.name", "../x", "dataset.name: '../x' does not match"),
    ("model.dtype", "float8", "model.dtype: 'float8' is not one of"),
    ("editing.layers", [], "editing.layers: [] should be non-empty"),
    ("analysis.cv_folds", 1, "analysis.cv_folds: 1 is less than the minimum of 2"),
    ("analysis.wild_bootstrap_reps", -1, "analysis.wild_bootstrap_reps: -1 is less than the minimum"),
    ("world.profiles_per_subject", "four", "world.profiles_per_subject: 'four' is not of type"),
    ("world.n_aliases", -1, "world.n_aliases: -1 is less than the minimum of 0"),
    ("editing.probes.generic_prompts", ["{} is a", "no slot"],
     "editing.probes.generic_prompts.1: 'no slot' does not match"),
]


@pytest.mark.parametrize("key, value, message", SCHEMA_DEFECTS, ids=[d[0] for d in SCHEMA_DEFECTS])
def test_schema_defect_is_one_short_line(config, key, value, message):
    _set(config, key, value)
    problems = schema_problems(config, SCHEMA)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    assert len(problems[0]) < 400


def test_nested_command_line_overrides_get_yaml_types(config):
    # snakemake --config 'tracing={samples: 5}' delivers {'tracing': {'samples': '5'}}
    overrides = {"tracing": {"samples": "5", "noise_std": "null"}, "model": {"name": "007"},
                 "editing": {"layers": ["0", "2"]}}
    for section, values in overrides.items():
        config[section].update(values)
    coerce_overrides(config, overrides, SCHEMA)
    assert config["tracing"]["samples"] == 5 and config["tracing"]["noise_std"] is None
    assert config["model"]["name"] == "007"  # a string key stays a string
    assert config["editing"]["layers"] == [0, 2]
    assert schema_problems(config, SCHEMA) == []


def test_canonical_ignores_key_order(config):
    shuffled = reverse_mappings(copy.deepcopy(config))
    assert list(shuffled) != list(config)
    assert repr(canonical(shuffled)) == repr(canonical(config))


def test_model_source_kinds(tmp_path):
    assert source_kind("toy") == "toy"
    assert source_kind("EleutherAI/gpt-j-6B") == "hub" and source_kind("gpt2") == "hub"
    assert source_kind(str(tmp_path)) == "dir"
    assert source_kind("./models/nowhere") == "missing"
    assert source_kind("/abs/models/nowhere") == "missing"


def test_local_model_shape_and_architecture(config, tmp_path):
    config["model"]["source"] = str(tmp_path)
    shape, problems = planned_model_shape(config)
    assert shape is None and "has no config.json" in problems[0]
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["GPTJForCausalLM"], "n_layer": 28, "n_positions": 2048}))
    shape, problems = planned_model_shape(config)
    assert problems == [] and (shape.n_layers, shape.n_ctx) == (28, 2048)
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["BertForMaskedLM"], "num_hidden_layers": 12}))
    shape, problems = planned_model_shape(config)
    assert shape is None and "unsupported architecture 'BertForMaskedLM'" in problems[0]
    (tmp_path / "config.json").write_text("{")
    assert "cannot read" in planned_model_shape(config)[1][0]


def test_uncached_hub_model_offline_fails_in_one_line(config, monkeypatch):
    import time

    from locedit.validation import fetched_model_shape

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    shape, problems = fetched_model_shape("locedit-test/no-such-model")
    assert shape is None and len(problems) == 1 and time.perf_counter() - t0 < 5
    assert problems[0].startswith("model.source: hub model 'locedit-test/no-such-model' is not cached")
    assert "point model.source at a local directory" in problems[0]
    # Planning still works offline (dry runs of the presets): no problem, no shape.
    config["model"]["source"] = "locedit-test/no-such-model"
    assert planned_model_shape(config) == (None, [])


def test_loading_an_unreachable_hub_model_fails_in_one_line(monkeypatch):
    import time

    from locedit.modeling import load_model
    from locedit.validation import ConfigError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="model.source: hub model 'locedit-test/no-such-model'"):
        load_model("locedit-test/no-such-model", device="cpu")
    assert time.perf_counter() - t0 < 5


def test_model_revision_is_for_hub_models_and_reaches_the_loader(config, monkeypatch):
    """model.revision names a hub model's branch or commit: on another source it is a named
    mistake; set, it reaches from_pretrained and every model job's params, and it is part of
    the model's identity (results of another revision never pass for this one's)."""
    import copy

    import transformers

    from locedit import modeling, provenance

    cfg = copy.deepcopy(config)
    cfg["model"]["revision"] = "float16"
    assert any(p.startswith("model.revision: 'float16' is for a hub id") for p in config_problems(cfg))
    hub = copy.deepcopy(cfg)
    hub["model"]["source"] = "EleutherAI/gpt-j-6B"
    assert not [p for p in config_problems(hub) if p.startswith("model.revision")]
    assert provenance.model_identity(hub)["revision"] == "float16"
    other = copy.deepcopy(hub)
    other["model"]["revision"] = None
    assert provenance.model_identity(other) != provenance.model_identity(hub)
    seen = {}

    def fake(source, **kwargs):
        seen[source] = kwargs.get("revision")
        raise RuntimeError("stop")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    monkeypatch.setattr(modeling, "check_hub_source", lambda *a: None)  # offline here
    with pytest.raises(RuntimeError, match="stop"):
        modeling.load_model("some/model", revision="abc123", device="cpu")
    assert seen == {"some/model": "abc123"}
