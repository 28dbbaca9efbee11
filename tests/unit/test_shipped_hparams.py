"""ROME's shipped norm clamp and weight decay (config.yaml) checked against their definitions.

Other unit tests switch these off to make a random model's edit visible; here only the learning
rate is raised to make the clamp bind. The early-stopping rules (ROME's early_stop_loss, FT's
stop_loss) are only reached on a trained model: tests/workflow/test_toy_science.py.
"""

from __future__ import annotations

import pytest

from locedit.api import config_hparams
from locedit.editing.hparams import ROMEHparams, resolve
from locedit.editing.rome import rome_updates
from tests.conftest import REPO
from tests.unit.test_rome import TEMPLATES, _model, _request, _stats


def _shipped(method: str) -> dict:
    """What the workflow's error-injection jobs of ``method`` use (config.yaml)."""
    return config_hparams(method, "error_injection", REPO / "config.yaml")


def _rome(tok, records, **changed):
    model = _model(tok)
    hp = resolve(ROMEHparams, {**_shipped("rome"), **changed}, "rome")
    reqs = [_request(records, i) for i in range(len(records))]
    return hp, [diag for _, diag in rome_updates(model, tok, reqs, 1, hp, _stats(model), TEMPLATES)]


@pytest.mark.parametrize("lr", [None, 50.0])
def test_rome_clamp_and_weight_decay_as_shipped(tiny_tokenizer, counterfact_records, lr):
    hp, diags = _rome(tiny_tokenizer, counterfact_records, **({} if lr is None else {"v_lr": lr}))
    for d in diags:
        bound = hp.clamp_norm_factor * d["init_norm"]
        assert d["delta_norm"] <= bound * (1 + 1e-5)
        # loss = nll + kl + weight_decay, weight_decay = factor · ‖δ‖ / ‖v_init‖² (ROME's code)
        wd = hp.v_weight_decay * d["delta_norm"] / d["init_norm"] ** 2
        assert d["weight_decay"] == pytest.approx(wd, rel=1e-4)
        assert d["loss"] == pytest.approx(d["nll"] + d["kl"] + d["weight_decay"], rel=1e-5)
    if lr is not None:  # a step 50x too large: the clamp binds (so the check above can fail)
        assert any(d["delta_norm"] >= 0.999 * hp.clamp_norm_factor * d["init_norm"] for d in diags)
