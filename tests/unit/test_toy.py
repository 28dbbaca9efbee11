"""Toy-model training: the saved checkpoint loads like a real model; training is deterministic."""

import json
import math

import pytest
import torch

from locedit.modeling import load_model
from locedit.data.records import subject_token_range, validate_records
from locedit.data.toy import lr_at, train_tokenizer, train_toy_model
from locedit.data.world import generate_world

WORLD = {
    "n_subjects": 16,
    "n_relations": 6,
    "relations_per_subject": 2,
    "objects_per_relation": 2,
    "heldout_templates": 2,
    "n_neighborhood": 5,
    "n_attribute": 5,
    "prefix_prob": 0.5,
    "n_filler": 10,
    "profiles_per_subject": 0,
}
TOY = {
    "vocab_size": 300,
    "n_layer": 2,
    "n_embd": 16,
    "n_head": 2,
    "n_positions": 128,
    "batch_size": 4,
    "steps": 12,
    "lr": 5e-3,
    "warmup_steps": 2,
    "weight_decay": 0.01,
    "log_every": 2,
    "eval_limit": 2,
}


@pytest.fixture(scope="module")
def world():
    return generate_world(WORLD, seed=0)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    records, docs = world
    out = tmp_path_factory.mktemp("toy") / "model"
    metrics = train_toy_model(docs, TOY, 0, out, records=records)
    return out, metrics


def test_saved_model_loads_with_load_model(trained, world):
    out, metrics = trained
    model, tok = load_model(str(out), device="cpu")
    assert model.config.n_layer == TOY["n_layer"]
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id
    records, _ = world
    validate_records(records, tok)
    rw = records[0]["requested_rewrite"]
    start, end = subject_token_range(tok, rw["prompt"], rw["subject"])
    ids = tok(rw["prompt"].format(rw["subject"]))["input_ids"]
    assert tok.decode(ids[start:end]).strip() == rw["subject"]
    # tokenizer round-trips text exactly
    text = records[0]["paraphrase_prompts"][0]
    assert tok.decode(tok(text)["input_ids"]) == text
    logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok))
    saved = json.loads((out / "metrics.json").read_text())
    # frac_known recomputed independently: transformers' own greedy generate, 36 new tokens,
    # the true object in the continuation (the paper's criterion) for the first eval_limit records
    known = []
    for rec in records[: TOY["eval_limit"]]:
        rw = rec["requested_rewrite"]
        ids = torch.tensor([tok(rw["prompt"].format(rw["subject"]))["input_ids"]])
        out_ids = model.generate(ids, max_new_tokens=36, do_sample=False, pad_token_id=tok.eos_token_id)
        known.append(rw["target_true"]["str"].lower() in tok.decode(out_ids[0, ids.shape[1]:]).lower())
    assert saved["n_records"] == 2 and saved["frac_known"] == sum(known) / len(known)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_training_is_bit_identical_for_a_seed(trained, world, tmp_path):
    out, _ = trained
    records, docs = world
    quiet = {**TOY, "eval_limit": 0}  # same tokenizer (records' objects), no knowledge check
    train_toy_model(docs, quiet, 0, tmp_path / "again", records=records)
    train_toy_model(docs, quiet, 1, tmp_path / "other", records=records)
    a, _ = load_model(str(out), device="cpu")
    b, _ = load_model(str(tmp_path / "again"), device="cpu")
    c, _ = load_model(str(tmp_path / "other"), device="cpu")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_reduces_loss(trained):
    out, metrics = trained
    _, tok = load_model(str(out), device="cpu")
    # a freshly initialised model scores about log(vocab) nats per token
    assert metrics["final_loss"] < math.log(len(tok)) - 0.5


def test_rerun_replaces_an_existing_directory(world, tmp_path):
    _, docs = world
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    train_toy_model(docs, {**TOY, "steps": 1}, 0, out)
    assert (out / "config.json").exists() and not (out / "stale.txt").exists()


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, {**TOY, "steps": 20, "warmup_steps": 5}) for s in range(20)]
    assert lrs[0] < lrs[4] == pytest.approx(TOY["lr"])
    assert lrs[-1] < lrs[5] and lrs[-1] >= 0.1 * TOY["lr"]


def test_tokenizer_keeps_objects_whole_and_splits_names(world):
    records, docs = world
    objects = sorted({r["requested_rewrite"]["target_true"]["str"] for r in records})
    tok = train_tokenizer(docs, 600, whole_words=objects)
    assert all(len(tok(" " + o)["input_ids"]) == 1 for o in objects)
    subjects = {r["requested_rewrite"]["subject"] for r in records}
    assert all(len(tok(" " + s)["input_ids"]) >= 2 for s in subjects)
    plain = train_tokenizer(docs, 600)
    assert tok.get_vocab() != plain.get_vocab()
