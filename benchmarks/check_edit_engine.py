"""Check a finished run's edits against the per-fact path: every score, every job.

For each edit shard of a run (``results/{model}/{dataset}/editing/{variant}/{method}/{layer}/``),
re-edits its cases with the per-fact path (``editing.engine.batched: false``: the authors'
algorithm as written, one full forward/backward per step and fact) and compares every result
column with the shard, which the batched engine wrote. Prints the largest absolute difference
per column and the cases whose step counts differ, and writes the per-job table to ``--out``::

    python benchmarks/check_edit_engine.py                      # every job of the default run
    python benchmarks/check_edit_engine.py --methods rome --layers 0
    python benchmarks/check_edit_engine.py --methods memit --layers 4 --float64

``--float64`` also runs the per-fact path on a float64 copy of the model and reports how far
each float32 path (per-fact and engine) is from it: where the two float32 paths differ, this shows
whether the engine or the algorithm's own float32 rounding is at fault.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from locedit.api import toy_dir  # noqa: E402
from locedit.editing.covariance import CovarianceStore  # noqa: E402
from locedit.registry.methods import get_method  # noqa: E402
from locedit.editing.driver import EDIT_COLUMNS, run_edit_job  # noqa: E402
from locedit.io import read_json  # noqa: E402
from locedit.modeling import load_model  # noqa: E402

SCORES = [c for c in EDIT_COLUMNS if c.endswith(("_score", "_pre", "_post", "_success", "_magnitude"))]


def hparams(cfg: dict, method: str, variant: str) -> dict:
    section = dict(cfg["editing"]["methods"][method])
    per = section.pop("per_variant", None) or {}
    return {**section, **(per.get(variant) or {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results/toy/synthetic")
    ap.add_argument("--model", default=None, help="default: the toy of config.yaml")
    ap.add_argument("--stats", required=True, help="a statistics directory, resources/stats/world-<key>")
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--variants", nargs="+", default=None)
    ap.add_argument("--layers", nargs="+", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="engine_check.csv")
    ap.add_argument("--float64", action="store_true", help="also compare both with a float64 per-fact run")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases of each job")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    res = Path(args.results)
    model, tok = load_model(args.model or str(toy_dir()), device="cpu")
    templates = read_json(res / "editing" / "context_templates.json")
    stats = CovarianceStore.from_dir(args.stats, model=model)
    exact = exact_stats = None
    if args.float64:
        exact = copy.deepcopy(model).double()
        exact_stats = CovarianceStore.from_dir(args.stats, model=exact)
    rows = []
    for shard in sorted(res.glob("editing/*/*/*/*.parquet")):
        variant, method, layer = shard.parts[-4], shard.parts[-3], int(shard.parts[-2])
        if (args.methods and method not in args.methods) or (args.variants and variant not in args.variants):
            continue
        if args.layers is not None and layer not in args.layers:
            continue
        engine = pd.read_parquet(shard)
        if engine.empty:
            continue
        cases = read_json(res / "editing" / "inputs" / variant / f"{shard.stem}.json")["cases"]
        cases = cases[: args.cases]

        spec = get_method(method)

        def per_fact(m, st):
            return run_edit_job(
                m, tok, cases, method, layer, hparams(cfg, method, variant),
                stats=st if spec.needs_stats else None,
                context_templates=templates.get(spec.templates, []) if spec.needs_stats else [],
                aggregation=cfg["editing"]["paraphrase_aggregation"],
                essence_cap=cfg["editing"]["essence"]["cap"],
                essence_max_tokens=cfg["editing"]["essence"]["max_tokens"],
                batch_size=cfg["editing"]["batch_size"],
            ).set_index("case_id")  # fmt: skip

        t0 = time.perf_counter()
        a = per_fact(model, stats)
        seconds = time.perf_counter() - t0
        b = engine.set_index("case_id").loc[a.index]
        diff = {c: float((a[c] - b[c]).abs().max()) for c in SCORES}
        row = {"variant": variant, "method": method, "layer": layer, "edits": len(a),
               "per_fact_seconds": seconds, "engine_seconds": float(b["edit_seconds"].sum()),
               **{f"max_abs_{c}": v for c, v in diff.items()}}  # fmt: skip
        if exact is not None:
            e = per_fact(exact, exact_stats)
            for name, x in (("per_fact", a), ("engine", b)):
                row.update({f"{name}_vs_f64_{c}": float((x[c] - e[c]).abs().max()) for c in SCORES})
            note = (f"  vs float64: per-fact essence_score {row['per_fact_vs_f64_essence_score']:.1e}, "
                  f"rewrite_score {row['per_fact_vs_f64_rewrite_score']:.1e}; engine essence_score "
                  f"{row['engine_vs_f64_essence_score']:.1e}, rewrite_score "
                  f"{row['engine_vs_f64_rewrite_score']:.1e}")  # fmt: skip
        else:
            note = ""
        rows.append(row)
        worst = max(diff, key=diff.get)
        print(f"{variant:19s} {method:6s} L{layer}: {len(a):3d} edits, max |diff| {diff[worst]:.1e} ({worst})", flush=True)
        if note:
            print(note, flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    cols = [c for c in table.columns if c.startswith("max_abs_")]
    print(f"largest difference over {int(table['edits'].sum())} edits:")
    print(table[cols].max().sort_values(ascending=False).head(8).to_string())


if __name__ == "__main__":
    main()
