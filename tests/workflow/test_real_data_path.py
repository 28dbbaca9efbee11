"""The real-run path (a local model directory and a CounterFact/zsRE file) runs the same rules
as the embedded default, on data the project ships, and bad records fail before any model job."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tests.conftest import FIXTURES
from tests.workflow.helpers import reduced_config, snakemake, write_config

pytestmark = pytest.mark.slow  # Snakemake jobs (validation, records, the known-fact filter)


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory, tiny_tokenizer):
    """A random GPT-2 saved with save_pretrained: stands in for a hub checkpoint."""
    path = tmp_path_factory.mktemp("local_model")
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=128, vocab_size=len(tiny_tokenizer))
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def _config(model_dir, data_path, fmt, name):
    cfg = reduced_config()
    cfg["model"].update(name="local", source=str(model_dir), device="cpu")
    cfg["dataset"].update(name=name, source="path", path=str(data_path), format=fmt, limit=4)
    cfg.setdefault("editing", {})["layers"] = [0, 1]  # the stand-in model has 2 layers (checked when planned)
    cfg.setdefault("filter", {})["min_known"] = 0  # a random model knows no fact; the table is the point
    # A real model needs real text for ROME/MEMIT's statistics (the planner refuses otherwise).
    corpus = model_dir / "corpus.txt"
    corpus.write_text("The Eiffel Tower is in Paris.\nDanielle Darrieux spoke French.\n")
    cfg.setdefault("editing", {}).setdefault("stats", {})["corpus"] = str(corpus)
    return cfg


@pytest.mark.parametrize(
    "fmt, fixture", [("counterfact", "counterfact_sample_5.json"), ("zsre", "zsre_mend_eval_sample_5.json")]
)
def test_local_model_and_dataset_file(tmp_path, local_model_dir, fmt, fixture):
    cfg = write_config(tmp_path, _config(local_model_dir, FIXTURES / fixture, fmt, fmt))
    target = f"results/local/{fmt}/facts.parquet"
    snakemake(tmp_path, "--cores", "1", target, configfile=cfg)
    facts = pd.read_parquet(tmp_path / target)
    assert len(facts) == 4  # dataset.limit: the first 4 records, in file order
    assert list(facts["case_id"]) == sorted(facts["case_id"])
    assert facts["p_true"].between(0, 1).all() and facts["p_new"].between(0, 1).all()
    # No world was generated and no toy model trained for a real run.
    assert not (tmp_path / "resources" / "models").exists() and not (tmp_path / "resources" / "world").exists()


def test_bad_record_fails_before_model_jobs(tmp_path, local_model_dir):
    records = json.loads((FIXTURES / "counterfact_sample_5.json").read_text())
    records[1]["requested_rewrite"]["prompt"] = "a prompt without a slot"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    cfg = write_config(tmp_path, _config(local_model_dir, bad, "counterfact", "bad"))
    proc = snakemake(tmp_path, "--cores", "1", "results/local/bad/facts.parquet", configfile=cfg,
                     check=False)
    assert proc.returncode != 0
    (log_path,) = (tmp_path / "logs" / "validate_inputs" / "local" / "bad").glob("*.log")  # one candidate
    log = log_path.read_text()
    assert ("case_id 1: requested_rewrite.prompt 'a prompt without a slot' must contain exactly "
            "one '{}' slot") in log
    assert not (tmp_path / "results" / "local" / "bad" / "facts.parquet").exists()


def test_real_model_statistics_never_come_from_the_fact_world(tmp_path, local_model_dir):
    """Without a corpus, a real model's ROME/MEMIT statistics must all be among ROME's files:
    a missing layer fails the statistics job by name, before anything is written, and no fact
    world is generated for it."""
    cfg = _config(local_model_dir, FIXTURES / "counterfact_sample_5.json", "counterfact", "cf")
    npz = tmp_path / "rome_stats"
    npz.mkdir()
    cfg["editing"]["stats"].update(corpus=None, rome_npz_dir=str(npz))
    cfg["editing"]["run_methods"] = ["rome"]
    proc = snakemake(tmp_path, "--cores", "1", "compute_layer_stats",
                     configfile=write_config(tmp_path, cfg), check=False)
    assert proc.returncode != 0
    (log,) = (tmp_path / "logs" / "compute_layer_stats").glob("*.log")
    assert f"editing.stats.rome_npz_dir: {npz} has no statistics for layer(s) [0, 1]" in log.read_text()
    assert not list((tmp_path / "resources" / "stats").glob("*/manifest.json"))
    assert not (tmp_path / "resources" / "world").exists()
