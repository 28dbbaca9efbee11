"""Every rule's code hash covers every package module its script imports (transitively).

Snakemake does not track code a script imports, so each rule hashes its script and, through
`code_files` (workflow/rules/common.smk), every `locedit` module the script imports, found by
reading the sources. A module missed there would let an edit of it go unnoticed and leave stale
results. This checks `code_files` against the standard library's `modulefinder`, which finds
imports another way (in compiled bytecode), without running Snakemake.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from modulefinder import ModuleFinder
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.workflow.helpers import REPO

RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
PACKAGE = REPO / "src"
#: Rules versioned another way, on purpose.
EXEMPT = {
    # hours of GPU work behind protected outputs: versioned by STATS_FORMAT (editing_stats.smk)
    "compute_layer_stats": "format=STATS_FORMAT",
}


def _workflow_functions() -> dict:
    """`package_imports` and `code_files` as common.smk defines them, run against this repo."""
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    start, end = text.index("@cache\ndef package_imports"), text.index("def code_hash(")
    ns = {"ast": ast, "cache": cache, "Path": Path, "workflow": SimpleNamespace(basedir=REPO)}
    exec(compile(text[start:end], "common.smk", "exec"), ns)
    return ns


def _rule_scripts() -> dict[str, tuple[str, str]]:
    """rule name -> (script path relative to the repo, its `code=` line)."""
    out = {}
    for path in RULES:
        for block in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            script = re.search(r"script:\s*\n\s*\"\.\./scripts/(\w+\.py)\"", block)
            if script is None or (name in EXEMPT and EXEMPT[name] in block):
                continue
            code = re.search(r"\bcode=(.*(?:\n\s+\".*)?)", block)
            out[name] = (f"workflow/scripts/{script.group(1)}", code.group(1) if code else "")
    return out


@cache
def _found_by_modulefinder(script: str) -> frozenset[str]:
    """Package files ``script`` imports, transitively, as ``modulefinder`` finds them (only
    ``src/`` on its path, so third-party packages are not scanned)."""
    finder = ModuleFinder(path=[str(PACKAGE)])
    finder.run_script(str(REPO / script))
    return frozenset(
        Path(m.__file__).relative_to(REPO).as_posix()
        for name, m in finder.modules.items()
        if name.split(".")[0] == "locedit" and m.__file__
    )


FN = _workflow_functions()
RULE_SCRIPTS = _rule_scripts()


def test_rules_and_transitive_imports_are_found():
    assert {"trace_facts", "edit_facts", "fit_regressions", "train_toy_model"} <= set(RULE_SCRIPTS)
    # trace_facts.py -> tracing.tables -> tracing.trace -> tracing.batching -> kernels, tracing.passes
    deep = {"src/locedit/kernels.py", "src/locedit/tracing/passes.py"}
    assert deep <= _found_by_modulefinder("workflow/scripts/trace_facts.py")
    assert deep <= set(FN["code_files"]("workflow/scripts/trace_facts.py"))
    assert not deep & set(FN["code_files"]("workflow/scripts/fit_regressions.py"))


@pytest.mark.parametrize("rule", sorted(RULE_SCRIPTS))
def test_rule_hashes_its_script(rule):
    script, code = RULE_SCRIPTS[rule]
    assert code, f"rule {rule} runs {script} but has no params.code hash"
    assert script in code or "edit_method_code" in code, f"rule {rule}: {script} is not hashed"


@pytest.mark.parametrize("script", sorted({s for s, _ in RULE_SCRIPTS.values()}))
def test_code_files_cover_what_the_script_imports(script):
    found = _found_by_modulefinder(script)
    missing = found - set(FN["code_files"](script))
    assert not missing, f"{script} imports modules its code hash misses: {sorted(missing)}"


def _method_code_files() -> dict[str, set[str]]:
    """Each registered method's edit-job files, by editing_functions.smk's own functions."""
    from locedit.registry.methods import METHODS, get_method

    text = (REPO / "workflow" / "rules" / "editing_functions.smk").read_text()
    start, end = text.index("def method_module_path("), text.index("@cache  # called once per edit")
    ns = {"get_method": get_method, "code_files": FN["code_files"], "Path": Path}
    exec(compile(text[start:end], "editing_functions.smk", "exec"), ns)
    return {m: (ns["method_module_path"](m), set(ns["edit_method_code_files"](m))) for m in METHODS}


def test_method_hashes_cover_the_method_and_shared_code_only():
    """An edit job's hash covers its method's module (the registry names it, so the walker finds
    the code a lazy import would hide), everything it and edit_facts.py import, and no other
    method's own module: editing rome.py reruns ROME jobs, not MEMIT's or FT's."""
    found = _method_code_files()
    mod = {m: path for m, (path, _) in found.items()}
    files = {m: own for m, (_, own) in found.items()}
    assert mod["rome"] == "src/locedit/editing/rome.py" and mod["ft-5"] == "src/locedit/editing/ft.py"
    for method, own in files.items():
        assert mod[method] in own, method
        assert {mod[m] for m in files if mod[m] != mod[method]}.isdisjoint(own), method
        shared = {"driver.py", "evaluate.py", "hparams.py"}
        assert {f"src/locedit/editing/{f}" for f in shared} <= own, method
        assert {"src/locedit/registry/methods.py", "src/locedit/scoring.py"} <= own, method
        # the other vocabularies' modules: changing a tracing kind or a figure reruns no edit
        assert {"src/locedit/registry/kinds.py", "src/locedit/registry/analysis.py"}.isdisjoint(own)
    assert "src/locedit/editing/engine.py" in files["memit"] & files["rome"]
    assert files["ft-1"] == files["ft-5"]
