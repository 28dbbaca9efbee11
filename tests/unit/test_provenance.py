"""Artefact keys and the checks of what a study's names stand for (locedit.provenance)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import yaml

from locedit import files, provenance
from locedit.gguf import PACKAGED
from tests.workflow.helpers import REPO, reverse_mappings


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _changed(config, path, value):
    cfg = copy.deepcopy(config)
    *head, last = path.split(".")
    node = cfg
    for k in head:
        node = node[k]
    node[last] = value
    return cfg


def test_keys_follow_the_settings_that_make_the_artefact_not_key_order_or_names(config):
    world, toy = provenance.world_dir(config), provenance.toy_dir(config)
    reordered = reverse_mappings(config)
    assert list(reordered["world"]) != list(config["world"])
    assert (provenance.world_dir(reordered), provenance.toy_dir(reordered)) == (world, toy)
    # the names a config gives its study are not what makes the world or the toy
    renamed = _changed(_changed(config, "model.name", "other"), "dataset.name", "mine")
    assert (provenance.world_dir(renamed), provenance.toy_dir(renamed)) == (world, toy)
    # every world setting and the seed make both; a toy setting only the toy
    for path, value in (("world.n_filler", 99), ("seed", 1)):
        cfg = _changed(config, path, value)
        assert provenance.world_dir(cfg) != world and provenance.toy_dir(cfg) != toy, path
    cfg = _changed(config, "toy_model.steps", 10)
    assert provenance.world_dir(cfg) == world and provenance.toy_dir(cfg) != toy
    assert toy.startswith("resources/models/toy-") and len(toy.rsplit("-", 1)[1]) == provenance.KEY_LENGTH


def test_model_identity_of_each_source(config, tmp_path):
    assert provenance.model_identity(config)["key"] == provenance.toy_dir(config).rsplit("-", 1)[1]
    gguf = _changed(config, "model.source", "smollm2-135m")
    assert provenance.model_identity(gguf) == {"source": "smollm2-135m", "sha256": PACKAGED["smollm2-135m"].sha256}
    local = _changed(config, "model.source", str(tmp_path))
    assert provenance.model_identity(local) == {"source": "directory", "path": str(tmp_path.resolve())}
    hub = _changed(config, "model.source", "gpt2-xl")
    assert provenance.model_identity(hub) == {"source": "hub", "id": "gpt2-xl", "revision": None}


def test_stats_key_covers_model_precision_corpus_content_and_settings(config, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one document\nanother\n")
    cfg = _changed(config, "editing.stats.corpus", str(corpus))
    key = provenance.stats_key(cfg, str(corpus), 1)
    assert key.startswith(config["editing"]["stats"]["name"] + "-")
    variants = [
        provenance.stats_key(_changed(cfg, "model.dtype", "float16"), str(corpus), 1),
        provenance.stats_key(_changed(cfg, "toy_model.steps", 10), str(corpus), 1),
        provenance.stats_key(_changed(cfg, "editing.stats.sample_size", 7), str(corpus), 1),
        provenance.stats_key(cfg, str(corpus), 2),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    corpus.write_text("one document\nedited\n")
    assert provenance.stats_key(cfg, str(corpus), 1) != key
    # the name labels the directory; it does not make the statistics
    renamed = provenance.stats_key(_changed(cfg, "editing.stats.name", "wiki"), str(corpus), 1)
    assert renamed.split("-", 1)[1] == provenance.stats_key(cfg, str(corpus), 1).split("-", 1)[1]


def test_another_model_under_the_same_name_is_a_conflict_naming_what_differs(config):
    recorded = provenance.study_identity(config)
    assert provenance.identity_conflicts(recorded, recorded, "results/toy/synthetic", "the config") == []
    assert provenance.identity_conflicts(None, recorded, "results/toy/synthetic", "the config") == []
    other = provenance.study_identity(_changed(config, "toy_model.steps", 10))
    (problem,) = provenance.identity_conflicts(recorded, other, "results/toy/synthetic", "the config (x.yaml)")
    assert problem.startswith("model.name: results/toy/synthetic holds the results of another model")
    assert "settings.toy_model.steps: 700 -> 10" in problem and "the config (x.yaml)" in problem
    # a corrected dataset file under the same name reruns by value: no conflict
    data = dict(recorded, dataset={"source": "path", "sha256": "0" * 64})
    assert provenance.identity_conflicts(recorded, data, "results/toy/synthetic", "the config") == []


def test_model_files_are_the_model_s_own_and_changes_are_found(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "metrics.json").write_text('{"train_seconds": 1.5}')  # a record, not the model
    recorded = provenance.model_files(tmp_path)
    assert sorted(recorded) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert provenance.changed_files(recorded, tmp_path) == []
    (tmp_path / "metrics.json").write_text('{"train_seconds": 2.5}')
    assert provenance.changed_files(recorded, tmp_path) == []
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    (tmp_path / "tokenizer.json").unlink()
    assert provenance.changed_files(recorded, tmp_path) == ["model.safetensors", "tokenizer.json"]


def test_file_hashes_are_cached_by_size_and_time_and_redone_on_change(tmp_path, monkeypatch):
    path, cache = tmp_path / "big.bin", tmp_path / "cache" / "hashes.json"
    path.write_bytes(b"a" * 1000)
    calls = []
    real = files.file_sha256
    monkeypatch.setattr(files, "file_sha256", lambda p: calls.append(p) or real(p))
    first = files.cached_file_sha256(path, cache)
    files._MEMO.clear()  # another process: reads the cache file
    assert files.cached_file_sha256(path, cache) == first and len(calls) == 1
    assert json.loads(cache.read_text())[str(path.resolve())][2] == first
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(1, 1))  # same size, another time
    assert files.cached_file_sha256(path, cache) == real(path) != first and len(calls) == 2


def test_provenance_record_lists_versions_and_the_recorded_hashes():
    study = {"study": {"model": "toy", "dataset": "synthetic"}, "config_sha256": "c" * 64}
    report = {"model_files": {"config.json": "a" * 64}, "dataset_sha256": "d" * 64, "sha256": "r" * 64}
    record = provenance.provenance_record(study, report)
    assert record["model_files"] == report["model_files"] and record["records_sha256"] == "r" * 64
    assert record["software"]["torch"] and record["software"]["snakemake"] and record["software"]["python"]
