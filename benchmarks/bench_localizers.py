"""Benchmark: the cost per traced fact of each tracing kind, against the paper's (``mlp``:
Gaussian noise, denoising, probability), in one process on the same facts::

    python benchmarks/bench_localizers.py --model RUN/resources/models/toy-<key> \\
        --run RUN/results/toy/synthetic --facts 20 --window 5 --threads 2

Each kind is traced through :func:`locedit.tracing.tables.trace_dataset`, the tracing job's own
entry point (symmetric token replacement finds partners among the run's records), with the
run's noise level and sample count; the table gives seconds per fact and the ratio to ``mlp``.
The o_noise decode, which every fact pays once whatever it traces, is timed apart and left out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from locedit.data.records import flat_fact
from locedit.io import read_json
from locedit.modeling import load_model
from locedit.tracing import tables

KINDS = ["mlp", "mlp_logprob", "mlp_logit_diff", "mlp_noising", "mlp_str", "mlp_str_logit_diff",
         "mlp_str_noising", "mlp_str_noising_logit_diff"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", type=Path, required=True, help="a run's results/{model}/{dataset}")
    ap.add_argument("--facts", type=int, default=20)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--samples", type=int, default=None, help="default: the run's tracing.samples (10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=KINDS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype="float32", device="cpu")
    records = [flat_fact(r) for r in read_json(args.run / "records.json")]
    known = pd.read_parquet(args.run / "facts.parquet")
    keep = set(known.loc[known["is_correct"].astype(bool), "case_id"])
    facts = [f for f in records if f["case_id"] in keep][: args.facts]
    sigma = float(read_json(args.run / "tracing" / "noise.json")["noise_std"])
    samples = args.samples or 10
    kw = dict(noise_std=sigma, samples=samples, seed=0, row_budget=512, o_noise_max_tokens=1, pool=records)
    tables.trace_dataset(model, tok, facts[:2], [{"kind": "mlp", "window": args.window}], **kw)  # warm-up
    start = time.perf_counter()
    tables.trace_dataset(model, tok, facts, [{"kind": "zero", "window": 1}], **kw)  # o_noise and set-up
    base = time.perf_counter() - start
    rows = []
    for kind in args.kinds:
        start = time.perf_counter()
        grid, out = tables.trace_dataset(model, tok, facts, [{"kind": kind, "window": args.window}], **kw)
        secs = time.perf_counter() - start - base
        rows.append({"kind": kind, "facts traced": grid["case_id"].nunique(), "s per fact": secs / len(facts)})
    table = pd.DataFrame(rows)
    table["vs mlp"] = table["s per fact"] / float(table.loc[table["kind"] == "mlp", "s per fact"].iloc[0])
    print(f"{len(facts)} facts, window {args.window}, {samples} noise samples, sigma {sigma:.3g}, "
          f"{args.threads} threads; set-up and o_noise per fact {base / len(facts):.3f} s (left out)")
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
