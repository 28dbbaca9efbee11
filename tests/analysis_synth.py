"""Synthetic upstream tables for the analysis stage (facts, tracing, edits), with known effects.

Scores are ``layer_effect[layer] + trace_coef * trace_effect + case_sd * u_case + noise_sd * e``
(unclipped unless ``clip``), so R² values have closed forms when the trace effect is independent
of the layer: Var(y) = Var(layer_effect) + trace_coef² Var(x) + case_sd² + noise_sd².
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from locedit.analysis import VARIANTS
from locedit.tracing.tables import EFFECT_COLUMNS

#: The paper's four methods (the default run's), in its table order.
PAPER_METHODS = ("ft-1", "ft-5", "rome", "memit")
SCORE_COLS = ["rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score"]


def make_tables(
    n_cases: int = 40,
    n_model_layers: int = 6,
    edit_layers: tuple[int, ...] = (0, 1, 2, 3, 4, 5),
    windows: tuple[int, ...] = (1, 3, 5),
    variants: tuple[str, ...] = tuple(VARIANTS),
    methods: tuple[str, ...] = PAPER_METHODS,
    layer_effect: np.ndarray | None = None,
    trace_coef: float = 0.3,
    noise_sd: float = 0.05,
    case_sd: float = 0.0,
    clip: bool = True,
    n_unknown: int = 3,
    zero: bool = True,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build ``facts, tracing, edits`` frames shaped like the upstream parquet contracts.

    Tracing effects are i.i.d. U(0, 1) per (case, window, layer) so they are independent of
    the layer; the first ``n_unknown`` cases are not known (``is_correct`` False).
    """
    rng = np.random.default_rng(seed)
    cases = np.arange(n_cases + n_unknown)
    facts = pd.DataFrame(
        {
            "case_id": cases,
            "subject": [f"s{c}" for c in cases],
            "prompt": "{} is in",
            "relation_id": "P1",
            "target_true": "a",
            "target_new": "b",
            "p_true": rng.uniform(0.1, 0.9, len(cases)),
            "p_new": 0.01,
            "is_correct": cases >= n_unknown,
            "erasure_eligible": True,
            "continuation": "a",
        }
    )
    trows = []
    for kind in ["mlp"] + (["zero"] if zero else []):
        for w in windows if kind == "mlp" else (windows[-1],):
            for c in cases:
                frac = rng.uniform(0, 1, n_model_layers)
                for layer in range(n_model_layers):
                    trows.append(
                        (
                            c,
                            kind,
                            w,
                            layer,
                            frac[layer],
                            frac[layer] * 0.8,
                            frac[layer] * 0.5,
                            frac[layer] * 0.4,
                            0.6,
                            0.1,
                            0.1,
                            "ok",
                        )
                    )
    tracing = pd.DataFrame(trows, columns=EFFECT_COLUMNS)
    if layer_effect is None:
        layer_effect = np.linspace(0.9, 0.3, len(edit_layers))
    main_w = 5 if 5 in windows else windows[0]
    x_of = tracing[(tracing.kind == "mlp") & (tracing.window == main_w)].set_index(
        ["case_id", "layer"]
    )["effect_frac_max"]
    u = rng.normal(0, 1, len(cases))
    erows = []
    for v in variants:
        for m in methods:
            for li, layer in enumerate(edit_layers):
                for c in cases:
                    x = x_of[(c, layer)]
                    base = layer_effect[li] + trace_coef * x + case_sd * u[c]
                    s = base + noise_sd * rng.normal(size=4)
                    if clip:
                        s = np.clip(s, 0, 1)
                    erows.append((c, v, m, layer, *s))
    edits = pd.DataFrame(erows, columns=["case_id", "variant", "method", "layer"] + SCORE_COLS)
    edits["overall_score"] = edits[SCORE_COLS[:3]].mean(axis=1)
    for col in [
        "rewrite_pre",
        "rewrite_post",
        "paraphrase_pre",
        "paraphrase_post",
        "neighborhood_pre",
        "neighborhood_post",
        "essence_ppl_pre",
        "essence_ppl_post",
        "efficacy_success",
        "efficacy_magnitude",
        "paraphrase_success",
        "paraphrase_magnitude",
        "neighborhood_success",
        "neighborhood_magnitude",
        "opt_seconds",
        "update_seconds",
        "eval_seconds",
    ]:
        edits[col] = rng.uniform(0, 1, len(edits))
    edits["target"] = "b"
    return facts, tracing, edits
