"""Planning the paper presets: small enough (≤ 3,000 jobs), fast, offline, and the fan-out the
config asks for. Timing is measured properly in benchmarks/bench_planning.py; the bound here
only catches a per-datapoint DAG (117k jobs, minutes of planning)."""

from __future__ import annotations

import math
import re
import time

import pytest
import yaml

from locedit.registry.rules import EDIT_RULES
from tests.workflow.helpers import REPO
from tests.workflow.runs import dry_run_jobs, dry_run_listing, run

PRESETS = ["config/paper_gptj.yaml", "config/paper_gpt2xl.yaml"]
MAX_JOBS = 3000
MAX_SECONDS = 60


@pytest.mark.parametrize("preset", PRESETS)
def test_paper_preset_plans_small_fast_and_offline(tmp_path, preset):
    cfg = yaml.safe_load((REPO / preset).read_text())
    # A user downloads ROME's statistics first (planning refuses a rome_npz_dir that is missing).
    (tmp_path / cfg["editing"]["stats"]["rome_npz_dir"]).mkdir(parents=True)
    t0 = time.perf_counter()
    counts = dry_run_jobs(tmp_path, "--cores", "1", configfile=REPO / preset)
    elapsed = time.perf_counter() - t0
    total = sum(counts.values())
    assert 0 < total <= MAX_JOBS, f"{preset}: {total} jobs: {counts}"
    assert elapsed <= MAX_SECONDS, f"{preset}: planning took {elapsed:.1f} s"
    # Planning loads no model and downloads nothing: the scratch dir holds only .snakemake and
    # the statistics folder made above.
    assert {p.name for p in tmp_path.iterdir()} <= {".snakemake", "resources"}, list(tmp_path.iterdir())
    limit = cfg["dataset"]["limit"]
    assert limit == 2000 and cfg["dataset"]["source"] == "url"
    # The fan-out the config asks for: one trace job per record shard (all (kind, window) runs
    # inside), one edit job per (variant, method, layer, record shard), then aggregates.
    ed, tr = cfg["editing"], cfg["tracing"]
    assert counts["trace_facts"] == math.ceil(limit / tr["shard_size"])
    assert sum(counts.get(r, 0) for r in EDIT_RULES) == (len(ed["variants"]) * len(ed["run_methods"]) * len(ed["layers"])
                                    * math.ceil(limit / ed["shard_size"]))
    assert counts["collect_edits"] == counts["aggregate_tracing"] == 1


def test_real_model_statistics_from_a_missing_folder_are_refused_by_planning(tmp_path):
    """GPT-J's statistics come from ROME's files (every layer) or a corpus, never from the fact
    world's text: a rome_npz_dir that does not exist stops planning, naming the key."""
    proc = run(tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config/paper_gptj.yaml"),
               check=False)
    assert proc.returncode != 0
    assert "editing.stats.rome_npz_dir: 'resources/rome_stats/EleutherAI_gpt-j-6B/wikipedia_stats' is not a directory" in proc.stdout + proc.stderr


def test_gptj_preset_has_the_paper_grid():
    cfg = yaml.safe_load((REPO / "config/paper_gptj.yaml").read_text())
    assert cfg["model"]["source"] == "EleutherAI/gpt-j-6B" and cfg["model"]["dtype"] == "float16"
    # Paper §1.1: layers {1,5,6,9,13,17,21,25,28}, 1-indexed -> 0-indexed here.
    assert sorted(cfg["editing"]["layers"]) == [0, 4, 5, 8, 12, 16, 20, 24, 27]


def test_gpt2xl_preset_has_the_paper_grid():
    cfg = yaml.safe_load((REPO / "config/paper_gpt2xl.yaml").read_text())
    assert cfg["model"]["source"] == "gpt2-xl"
    # Paper §1.2: 14 layers {1,5,9,13,17,18,21,25,29,33,37,41,45,48} 1-indexed.
    assert sorted(cfg["editing"]["layers"]) == sorted(list(range(0, 48, 4)) + [17, 47])


def test_probes_preset_adds_its_table_and_figure_and_keeps_the_default_apart(tmp_path):
    """config/probes.yaml plans the probe table and figure, under its own model and world
    paths; the default plans neither."""
    listing = dry_run_listing(tmp_path, "--cores", "1", configfile=REPO / "config/probes.yaml")
    rules = {j["rule"] for j in listing}
    assert {"write_probe_tables", "plot_probes"} <= rules
    outputs = " ".join(j["output"] for j in listing)
    default_listing = dry_run_listing(tmp_path, "--cores", "1", configfile=REPO / "config.yaml")
    default_outputs = " ".join(j["output"] for j in default_listing)
    # The world and the toy live under keys of their settings: the preset's differ from the
    # default's, so neither run can overwrite the other's.
    for pattern in (r"resources/models/toy-[0-9a-f]{12}/config\.json", r"resources/world/[0-9a-f]{12}/records\.json"):
        ours, theirs = set(re.findall(pattern, outputs)), set(re.findall(pattern, default_outputs))
        assert len(ours) == len(theirs) == 1 and ours != theirs
    assert not {"write_probe_tables", "plot_probes"} & {j["rule"] for j in default_listing}


def test_real_model_preset_plans_the_gguf_import_and_the_sampled_corpus_offline(tmp_path):
    """config/smollm2.yaml plans the model's download and import (keyed by the GGUF's content),
    the model-sampled statistics corpus and the whole study, without loading or fetching
    anything; the packaged model's shape checks its edit layers before the download."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "known_1000.json").write_bytes((REPO / "data" / "known_1000.json").read_bytes())
    listing = dry_run_listing(tmp_path, "--cores", "1", configfile=REPO / "config/smollm2.yaml")
    rules = {j["rule"] for j in listing}
    assert {"download_model", "import_gguf_model", "sample_stats_corpus", "compute_layer_stats",
            "filter_known_facts", "trace_facts", "tune_hparams", "edit_facts", "fit_regressions",
            "write_tables"} <= rules
    assert "train_toy_model" not in rules and "generate_fact_world" not in rules
    outputs = " ".join(j["output"] for j in listing)
    assert "resources/gguf/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e.gguf" in outputs
    assert "resources/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e/config.json" in outputs
    assert {p.name for p in tmp_path.iterdir()} <= {".snakemake", "data"}
    cfg = yaml.safe_load((REPO / "config/smollm2.yaml").read_text())
    assert len(cfg["editing"]["layers"]) >= 5 and {"rome", "memit", "ft-1", "r-rome"} <= set(cfg["editing"]["run_methods"])


@pytest.mark.parametrize(
    "source, message",
    [("missing.gguf", "model.source: no such GGUF file 'missing.gguf'"),
     ("not_gguf.gguf", "is not a GGUF file"),
     ("smollm2-135m", "editing.layers: layer(s) [30] outside the model's 30 layers")],
)
def test_bad_gguf_sources_stop_planning_naming_the_key(tmp_path, source, message):
    (tmp_path / "not_gguf.gguf").write_text("hello")
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"model": {"name": "m", "source": source},
                                        "editing": {"layers": [1, 30]}}))
    proc = run(tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config.yaml"), str(override),
               check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert {p.name for p in tmp_path.iterdir()} <= {".snakemake", "not_gguf.gguf", "override.yaml"}
