"""Other localizers on a finished run, without rerunning it: trace its known facts with more
kinds, join them to the run's edits and fit the workflow's regressions (the localizer table and
the summary's best localizer per problem)::

    python benchmarks/compare_localizers.py --model RUN/resources/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e \\
        --run RUN/results/smollm2-135m/known --kinds mlp_str --window 5 --threads 2

The run's own tracing (its ``analysis.trace_kind`` at ``--window``) stays the regressions'
``trace_effect``; each new kind is traced through the tracing job's entry point
(:func:`locedit.tracing.tables.trace_dataset`, partners drawn from the run's records) and joined
and regressed by :func:`locedit.analysis.join.build_edit_vs_trace` and
:func:`locedit.analysis.study.run_study`. Prints where each localizer peaks per fact, how often
two localizers agree on the peak, and the regressions on the rewrite score.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from locedit.analysis.edit_tables import best_localizers, localizer_table
from locedit.analysis.join import build_edit_vs_trace
from locedit.analysis.robust import RobustSettings
from locedit.analysis.study import run_study
from locedit.data.records import flat_fact
from locedit.io import read_json
from locedit.modeling import load_model
from locedit.tracing.tables import layer_effects, peak_layers, trace_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", type=Path, required=True, help="a finished run's results/{model}/{dataset}")
    ap.add_argument("--kinds", nargs="+", default=["mlp_str"])
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--base-kind", default="mlp", help="the run's traced kind (analysis.trace_kind)")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed (noise, partners, regressions)")
    ap.add_argument("--samples", type=int, default=10, help="the run's tracing.samples (Gaussian kinds)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype="float32", device="cpu")
    records = [flat_fact(r) for r in read_json(args.run / "records.json")]
    tracing = pd.read_parquet(args.run / "tracing.parquet")
    facts = pd.read_parquet(args.run / "facts.parquet")
    traced = set(tracing.loc[(tracing["kind"] == args.base_kind) & (tracing["status"] == "ok"), "case_id"])
    todo = [f for f in records if f["case_id"] in traced]
    runs = [{"kind": k, "window": args.window} for k in args.kinds]
    start = time.perf_counter()
    sigma = float(read_json(args.run / "tracing" / "noise.json")["noise_std"])  # the run's noise level
    grid, traced_facts = trace_dataset(model, tok, todo, runs, noise_std=sigma, samples=args.samples,
                                       seed=args.seed, row_budget=512, o_noise_max_tokens=1, pool=records)
    secs = time.perf_counter() - start
    new = layer_effects(grid, traced_facts, runs)
    print(f"traced {len(todo)} facts with {', '.join(args.kinds)} in {secs:.0f} s "
          f"({secs / max(1, len(todo)):.2f} s per fact, all kinds, o_noise decode included); statuses "
          f"{new.groupby('kind')['status'].value_counts().to_dict()}")
    both = pd.concat([tracing, new], ignore_index=True)
    peaks = {k: peak_layers(both, k, args.window).set_index("case_id")["layer"]
             for k in [args.base_kind, *args.kinds]}
    print("\n## Peak layer per fact (1-indexed), max over tokens\n")
    for k, p in peaks.items():
        q = (p + 1).quantile([0.25, 0.5, 0.75])
        top = (p + 1).value_counts().head(3)
        print(f"- {k}: {len(p)} facts, median {q[0.5]:.0f}, quartiles {q[0.25]:.0f}-{q[0.75]:.0f}; "
              f"most often {', '.join(f'layer {int(l)} ({n})' for l, n in top.items())}")
    base = peaks[args.base_kind]
    for k in args.kinds:
        common = base.index.intersection(peaks[k].index)
        same = float((base[common] == peaks[k][common]).mean())
        curves = both[(both["window"] == args.window) & both["kind"].isin([args.base_kind, k])
                      & (both["status"] == "ok")].pivot_table(index=["case_id", "layer"], columns="kind",
                                                              values="effect_frac_max").dropna()
        rho = spearmanr(curves[args.base_kind], curves[k]).statistic
        print(f"- {k} vs {args.base_kind}: same peak layer for {same:.0%} of {len(common)} facts; "
              f"Spearman rho of the per-(fact, layer) effects {rho:.3f}")
    edits = pd.read_parquet(args.run / "edits.parquet")
    df = build_edit_vs_trace(edits, both, facts, window=args.window, kind=args.base_kind)
    frames = run_study(df, args.window, ["rewrite"], ["rewrite"], 10, RobustSettings(seed=args.seed))
    print("\n## Rewrite score: R² of the layer, and what each localizer adds (Diff)\n")
    print(localizer_table(frames["main"], frames["features"], "rewrite").to_markdown(index=False))
    reg = pd.concat([frames["main"], frames["features"]], ignore_index=True)
    reg = reg[(reg["metric"] == "rewrite") & reg["feature"].isin(["trace_effect", *[f"{k}_effect" for k in args.kinds]])]
    print("\n" + reg[["variant", "method", "feature", "r2_layer", "r2_diff", "wald_pvalue_wild", "perm_pvalue",
                      "cv_r2_diff"]].round(4).to_markdown(index=False))
    print()
    for q, v in best_localizers(frames["main"], frames["features"], 0.05):
        print(f"- {q}: {v}")


if __name__ == "__main__":
    main()
