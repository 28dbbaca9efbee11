"""The study's vocabulary lives in one place (locedit.registry): each name is written once, the
schema's defaults are the typed hyperparameters', and a method is one registry entry plus its
module — shown here by a toy method registered from this test only."""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from locedit.registry.methods import FT1, FT5, MEMIT, METHODS, Method, ROME, register_method, unregister_method
from locedit.registry.variants import VARIANTS
from locedit.adapters import edit_weight
from locedit.analysis.tables import TABLE_NAMES
from locedit.editing.driver import run_edit_job
from locedit.editing.hparams import FTHparams, Hparams, MEMITHparams, ROMEHparams, merge_variant
from locedit.editing.inputs import prepare_inputs
from locedit.editing.types import Snapshot
from locedit.registry.methods import config_problems as method_problems

REPO = Path(__file__).resolve().parents[2]
#: Source files of the product: the package, the workflow, its scripts, the benchmarks.
SOURCES = sorted(
    [REPO / "Snakefile"]
    + [p for d in ("src", "workflow", "benchmarks") for p in (REPO / d).rglob("*") if p.suffix in (".py", ".smk")]
)


def _string_literals(path: Path) -> set[str]:
    """The string constants written in ``path`` (docstrings and comments are not names)."""
    out = set()
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    for tok in toks:
        if tok.type == tokenize.STRING:
            body = tok.string.lstrip("rbuRBUfF")
            if body[:1] in "\"'" and not body.startswith(('"""', "'''")):
                out.add(body[1:-1])
    return out


def test_each_method_variant_and_table_name_is_written_in_one_source_file():
    names = set(METHODS) | set(VARIANTS) | set(TABLE_NAMES)
    where: dict[str, list[str]] = {n: [] for n in names}
    for path in SOURCES:
        for lit in _string_literals(path) & names:
            where[lit].append(str(path.relative_to(REPO)))
    repeated = {n: files for n, files in where.items() if len(files) > 1}
    assert not repeated, f"names written in more than one source file: {repeated}"
    assert all(where[n] for n in names)  # the check sees the one place of each


def _schema_defaults(section: dict) -> dict:
    return {k: v["default"] for k, v in section["properties"].items() if "default" in v and k != "per_variant"}


def test_schema_defaults_are_the_typed_defaults():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    methods = schema["properties"]["editing"]["properties"]["methods"]["properties"]
    assert set(methods) <= set(METHODS)  # a method without a section: planning checks its class
    assert {"rome", "memit", "ft-1", "ft-5"} <= set(methods)
    for name, spec in ((n, METHODS[n]) for n in methods):
        typed = spec.hparams().as_dict()
        for key in spec.fixed:  # a name-fixed key is not a config key
            typed.pop(key)
        assert _schema_defaults(methods[name]) == typed, name


def test_hparams_are_typed_merged_once_and_checked():
    section = {"v_lr": 0.1, "per_variant": {"fact_forcing": {"v_num_grad_steps": 65}}}
    assert merge_variant(section, "fact_forcing") == {"v_lr": 0.1, "v_num_grad_steps": 65}
    assert merge_variant(section, "fact_erasure") == {"v_lr": 0.1}
    hp = ROME.resolve(merge_variant(section, "fact_forcing"))
    assert isinstance(hp, ROMEHparams) and hp.v_num_grad_steps == 65 and hp.kl_factor == 0.0625
    with pytest.raises(Exception):  # frozen
        hp.v_lr = 1.0
    assert FT5.resolve({}).window == 5 and FT1.resolve({}).window == 1
    assert MEMIT.resolve({"window": 3}).window == 3
    assert FT5.edited_layers(0, {}, 12) == [0, 1, 2]
    assert MEMIT.edited_layers(11, {}, 12) == [9, 10, 11]
    with pytest.raises(ValueError, match=r"editing\.methods\.ft-5\.window: fixed to 5"):
        FT5.resolve({"window": 3})
    with pytest.raises(ValueError, match=r"unknown editing\.methods\.rome keys \['lr'\]"):
        ROME.resolve({"lr": 1.0})
    with pytest.raises(ValueError, match=r"editing\.methods\.memit\.fact_token"):
        MEMIT.resolve({"fact_token": "first"})
    assert isinstance(MEMIT.resolve({}), MEMITHparams)
    assert isinstance(FT1.resolve(FTHparams(window=1)), FTHparams)


def test_planning_refuses_unregistered_methods_and_bad_hparams():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())

    cfg["editing"]["run_methods"] = ["rome", "ft-9"]
    cfg["editing"]["methods"]["rome"]["per_variant"] = {"fact_erasure": {"v_num_grad_steps": 0}}
    cfg["editing"]["methods"]["rom"] = {"v_lr": 0.1}  # a typo the schema lets through
    problems = method_problems(cfg["editing"])
    assert any(p.startswith("editing.run_methods: ['ft-9'] are not registered") for p in problems)
    assert any(p.startswith("editing.methods.rom: not a registered method") for p in problems)
    assert any("editing.methods.rome.v_num_grad_steps: must be >= 1" in p and "fact_erasure" in p
               for p in problems), problems


def test_planning_checks_the_tuning_grids_only_when_tuning_is_enabled():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    ed = cfg["editing"]
    assert method_problems(ed) == []
    del ed["tuning"]["grids"]["memit"]
    ed["tuning"]["grids"]["ft-1"] = {"norm_constraint": [1e-3, -1.0]}
    ed["tuning"]["grids"]["rome"] = {"kl_facter": [0.5]}  # a typo
    assert method_problems(ed) == []  # tuning off: the grids are not used
    ed["tuning"]["enabled"] = True
    problems = method_problems(ed)
    assert any(p.startswith("editing.tuning.grids.memit: missing") for p in problems), problems
    assert any(p.startswith("editing.tuning.grids.ft-1: candidate {'norm_constraint': -1.0}")
               for p in problems), problems
    assert any(p.startswith("editing.tuning.grids.rome:") and "kl_facter" in p for p in problems), problems
    assert not any("{'norm_constraint': 0.001}" in p for p in problems)  # the good candidate passes


# --- a toy method, registered from this test only -------------------------------------------


@dataclass(frozen=True)
class ScaleHparams(Hparams):
    """Scale the edit layer's down-projection by (1 + factor): a real, if useless, edit."""

    factor: float = field(default=0.5, metadata={"doc": "relative change of every weight"})

    def problems(self) -> list[str]:
        return [] if self.factor > -1 else [f"factor: must be > -1, got {self.factor}"]


def apply_scale(model, tok, request, layer, hparams, stats=None, context_templates=None):
    w = edit_weight(model, layer)
    snapshot = Snapshot()
    snapshot.save(model, w)
    with torch.no_grad():
        w.mul_(1 + hparams.factor)
    return snapshot, {"opt_seconds": 0.0, "edited_layers": str(layer)}


@pytest.fixture
def scale_method():
    spec = register_method(
        Method("scale", "Scale", "", __name__, "apply_scale", None, ScaleHparams)
    )
    yield spec
    unregister_method(spec.name)


def test_a_registered_method_runs_through_the_edit_job(tiny_gpt2, tiny_tokenizer, counterfact_records, scale_method):
    recs = counterfact_records[:2]
    facts = {int(r["case_id"]): {"is_correct": True, "erasure_eligible": True,
                                 "target_true": r["requested_rewrite"]["target_true"]["str"]} for r in recs}
    cases = prepare_inputs(tiny_gpt2, tiny_tokenizer, recs, facts, variants=["error_injection"],
                           o_noise={}, noise_std=0.5, seed=0,
                           essence={"n_texts": 2, "top_k": 5, "max_new_tokens": 6, "max_tokens": 100})["cases"]
    before = {k: v.clone() for k, v in tiny_gpt2.state_dict().items()}
    for engine in (None, {"row_budget": 8, "max_facts": 2}):  # no batch function: per fact
        df = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "scale", 1, {"factor": 3.0}, engine=engine)
        assert list(df["method"]) == ["scale"] * len(cases) and set(df["edited_layers"]) == {"1"}
        assert (df["rewrite_post"] != df["rewrite_pre"]).all()  # the edit took effect
    assert all(torch.equal(before[k], v) for k, v in tiny_gpt2.state_dict().items())  # undone
    with pytest.raises(ValueError, match=r"editing\.methods\.scale\.factor: must be > -1"):
        run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "scale", 1, {"factor": -2.0})
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["editing"]["run_methods"] = ["scale"]
    cfg["editing"]["methods"]["scale"] = {"factor": 0.1}
    assert method_problems(cfg["editing"], 12) == []
    with pytest.raises(ValueError, match="already registered"):
        register_method(scale_method)
