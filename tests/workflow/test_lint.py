"""`snakemake --lint` and `snakefmt --check` are clean (both gate CI through this test)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.workflow.helpers import REPO
from tests.workflow.runs import run, prepare_workdir


def test_snakemake_lint_is_clean(tmp_path):
    cfg = prepare_workdir(tmp_path)
    proc = run(tmp_path, "--lint", configfile=cfg, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in text, f"snakemake --lint:\n{text[-6000:]}"


def test_snakefmt_check_is_clean():
    snakefmt = shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([snakefmt, "--check", "--diff", "."], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"snakefmt --check:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"


#: The long-running rules: each keeps a Snakemake benchmark table.
LONG_RULES = {"train_toy_model", "filter_known_facts", "trace_facts", "compute_layer_stats",
              "prepare_edit_inputs", "edit_facts"}


def _rule_blocks() -> dict[str, str]:
    blocks = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", smk.read_text(), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            blocks[name] = body.split("\n\n\n")[0]
    return blocks


def test_every_rule_logs_and_long_rules_benchmark():
    blocks = _rule_blocks()
    assert LONG_RULES <= set(blocks), sorted(LONG_RULES - set(blocks))
    no_log = sorted(name for name, body in blocks.items() if "    log:" not in body)
    assert not no_log, f"rules without log: {no_log}"
    no_bench = sorted(name for name in LONG_RULES if "    benchmark:" not in blocks[name])
    assert not no_bench, f"long rules without benchmark: {no_bench}"
    with_message = sorted(name for name, body in blocks.items() if "    message:" in body)
    assert not with_message, f"message: hides job details: {with_message}"


def test_conda_env_lists_the_package_dependencies():
    """envs/locedit.yaml (--sdm conda) holds pyproject's dependencies, and not the package: jobs
    import this checkout's src/ through PYTHONPATH, set by the Snakefile."""
    import tomllib

    import yaml

    env = yaml.safe_load((REPO / "envs/locedit.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert pip == deps


def test_local_rules_are_quick_cpu_steps_and_the_downloads():
    """Under a cluster profile, rules marked ``localrule`` run on the submit host: the downloads
    (a compute node may have no network) and the quick CPU steps (aggregation, tables, plots),
    never a rule that loads the model (those hold the `gpu` resource)."""
    from locedit.registry.rules import MODEL_RULES

    blocks = _rule_blocks()
    local = {name for name, body in blocks.items() if "    localrule: True" in body}
    assert {"download_dataset", "download_model", "publish_validation", "write_tables",
            "record_provenance", "collect_edits", "aggregate_tracing"} <= local, sorted(local)
    assert not local & set(MODEL_RULES), sorted(local & set(MODEL_RULES))
    assert not local & {"fit_regressions", "train_toy_model", "import_gguf_model"}
