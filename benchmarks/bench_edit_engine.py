"""Benchmark: the batched editing engine against the per-fact path, per method, in one process.

Both paths edit the same facts with the same hyperparameters, and every edit is evaluated
(teacher-forced p(target) on its rewrite, paraphrase and neighborhood prompts) and undone, as
edit jobs do. Printed per method: edits/second of each path and their ratio; FLOPs of each
(``torch.utils.flop_counter``: every matmul, attention and backward op, in a separate untimed
run) and their ratio; and the largest difference of any evaluated probability between the two
paths (they compute the same edits up to float rounding).

Defaults: the toy model (``resources/models/toy-<key>`` of config.yaml, from ``snakemake --cores 2
train_toy_model``), its world's records, the hyperparameters and context
templates of ``config.yaml`` (error injection), one thread::

    python benchmarks/bench_edit_engine.py                          # 24 edits per method
    python benchmarks/bench_edit_engine.py --variant fact_forcing   # other editing problems
    python benchmarks/bench_edit_engine.py --max-facts 8            # batch size sweep

The real-model preset's model, facts, hyperparameters, templates and statistics (after a run of
``config/smollm2.yaml``), two threads; FLOP/s are reported against this machine's measured
matmul throughput::

    python benchmarks/bench_edit_engine.py --model resources/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e \
        --config config/smollm2.yaml --run results/smollm2-135m/known \
        --stats resources/stats/sampled-240x128-<key> --threads 2 --edits 8 --layer 5

GPU, random GPT-J-shaped model in float16 (random SPD C, fixed context templates)::

    python benchmarks/bench_edit_engine.py --gptj --device cuda --dtype float16 --edits 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_editing import add_model_args, build, random_stats, sync, templates  # noqa: E402
from locedit.registry.methods import METHODS, get_method  # noqa: E402
from locedit.registry.variants import ERROR_INJECTION, FACT_ERASURE, FACT_FORCING, TRACING_REVERSAL, VARIANTS  # noqa: E402
from locedit.editing.hparams import FTHparams  # noqa: E402
from locedit.editing.types import EditRequest, restore  # noqa: E402
from locedit.noise import subject_noise  # noqa: E402
from locedit.scoring import target_logprobs  # noqa: E402

WORLD = REPO / "resources" / "world" / "records.json"
FIXTURE = REPO / "tests" / "fixtures" / "counterfact_sample_5.json"
TOY_TEMPLATES = REPO / "results" / "toy" / "synthetic" / "editing" / "context_templates.json"


def hparams(method: str, variant: str, config: Path = REPO / "config.yaml") -> dict:
    """``config.yaml``'s (or ``config``'s, over it) hyperparameters of ``method`` for ``variant``
    (per_variant merged)."""
    sections = [yaml.safe_load(f.read_text())["editing"].get("methods", {}).get(method) or {}
                for f in dict.fromkeys([REPO / "config.yaml", Path(config)])]
    merged = {}
    for section in sections:
        merged.update({k: v for k, v in section.items() if k != "per_variant"})
    per = {}
    for section in sections:
        per.update((section.get("per_variant") or {}).get(variant) or {})
    return {**merged, **per}


def matmul_gflops(threads: int) -> float:
    """This machine's float32 matmul throughput (2048 x 2048, ``threads`` threads), GFLOP/s."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    return 10 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def cases(n: int, variant: str, d_model: int, records: Path | None = None,
          only: list[int] | None = None) -> list[tuple[EditRequest, list[str], list[str]]]:
    """(request, evaluation prompts, their targets) of the first ``n`` records (cycled), of
    ``records`` (default: the toy world's, else the test fixture), those in ``only`` if given."""
    recs = json.loads((records or (WORLD if WORLD.exists() else FIXTURE)).read_text())
    if only is not None:
        recs = [r for r in recs if int(r["case_id"]) in set(only)]
    out = []
    for i in range(n):
        r = recs[i % len(recs)]
        rw = r["requested_rewrite"]
        erase = variant == FACT_ERASURE.name
        forcing = variant == FACT_FORCING.name
        target = rw["target_true"]["str"] if erase or forcing else rw["target_new"]["str"]
        noise = subject_noise(d_model, 8, 0.3, i) if forcing else None
        req = EditRequest(int(r["case_id"]) + i, rw["prompt"], rw["subject"], target, erase, noise)
        prompts = [rw["prompt"].format(rw["subject"])] + r["paraphrase_prompts"] + r["neighborhood_prompts"]
        out.append((req, prompts, [target] * len(prompts)))
    return out


def run(model, tok, method, layer, hp, stats, tm, work, engine: dict | None) -> list[torch.Tensor]:
    """Edit, evaluate and undo every case; returns the evaluated log-probabilities per case."""
    reqs = [w[0] for w in work]
    spec = get_method(method)
    hp = spec.resolve(hp)  # the name's fixed keys (FT's window)
    if engine is None:
        edits = (spec.function()(model, tok, r, layer, hp, stats, tm) for r in reqs)
    else:
        edits = spec.function(batched=True)(model, tok, reqs, layer, hp, stats, tm, **engine)
    out = []
    for (req, prompts, targets), (snap, _) in zip(work, edits):
        out.append(target_logprobs(model, tok, prompts, targets, batch_size=64))
        restore(model, snap)
    return out


def timed(model, fn) -> tuple[float, object]:
    sync(model)
    t0 = time.perf_counter()
    res = fn()
    sync(model)
    return time.perf_counter() - t0, res


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--edits", type=int, default=24, help="edits per method and path")
    ap.add_argument("--layer", type=int, default=None, help="edit layer (default: n_layers // 4 + 1)")
    ap.add_argument("--variant", default=ERROR_INJECTION.name,  # not TR: no o_noise here
                    choices=[v for v in VARIANTS if v != TRACING_REVERSAL.name])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--row-budget", type=int, default=None, help="default: config.yaml's")
    ap.add_argument("--max-facts", type=int, default=None, help="default: config.yaml's")
    ap.add_argument("--no-flops", action="store_true", help="skip the (slow, untimed) FLOP count")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak (H100/H200 SXM)")
    ap.add_argument("--config", default=str(REPO / "config.yaml"),
                    help="config (over config.yaml) whose hyperparameters and engine settings are used")
    ap.add_argument("--run", help="results/{model}/{dataset} of a finished run: its records, known "
                    "facts and context templates")
    ap.add_argument("--stats", help="statistics directory (default: a random SPD C per layer)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, desc = build(args)
    from locedit.adapters import d_model, n_layers

    layer = args.layer if args.layer is not None else n_layers(model) // 4 + 1
    toy = "toy" in str(desc) or args.run is not None
    run_dir = Path(args.run) if args.run else None
    templates_path = run_dir / "editing" / "context_templates.json" if run_dir else TOY_TEMPLATES
    ctx = json.loads(templates_path.read_text()) if toy and templates_path.exists() else None
    if args.stats:
        from locedit.editing.covariance import CovarianceStore

        stats = CovarianceStore.from_dir(args.stats, model=model)
    else:
        stats = random_stats(model, seed=0)
    configured = {**yaml.safe_load((REPO / "config.yaml").read_text())["editing"]["engine"],
                  **(yaml.safe_load(Path(args.config).read_text()).get("editing", {}).get("engine") or {})}
    engine = {
        "row_budget": args.row_budget or configured["row_budget"],
        "max_facts": args.max_facts or configured["max_facts"],
    }
    known = None
    if run_dir is not None:
        import pandas as pd

        facts = pd.read_parquet(run_dir / "facts.parquet")
        known = facts.loc[facts["is_correct"], "case_id"].astype(int).tolist()
    work = cases(args.edits, args.variant, d_model(model), run_dir / "records.json" if run_dir else None, known)
    cpu_peak = None if args.device.startswith("cuda") else matmul_gflops(args.threads)
    print(f"{desc} on {args.device} ({args.dtype}, {args.threads} thread(s)); {args.variant}, layer "
          f"{layer}; {args.edits} edits per method and path; engine {engine}")  # fmt: skip
    print(f"{'method':7s} {'per-fact':>10s} {'engine':>10s} {'speed-up':>9s} {'FLOP ratio':>11s} {'max |dp|':>9s}")
    for method in args.methods:
        hp = hparams(method, args.variant, Path(args.config)) if toy else {}
        if get_method(method).hparams is FTHparams and not toy:
            hp = {"lr": 5e-4, "num_steps": 25, "norm_constraint": 1e-4, "stop_loss": 0.0}
        tm = (ctx or {}).get(method) or templates(method)
        if get_method(method).needs_stats:  # factorise C once per layer before timing (both paths)
            for lay in range(max(0, layer - 2), min(n_layers(model), layer + 3)):
                stats.factor(lay)
        warm = work[:2]
        run(model, tok, method, layer, hp, stats, tm, warm, None)
        run(model, tok, method, layer, hp, stats, tm, warm, engine)
        t_ref, ref = timed(model, lambda: run(model, tok, method, layer, hp, stats, tm, work, None))
        t_new, new = timed(model, lambda: run(model, tok, method, layer, hp, stats, tm, work, engine))
        dp = max(float((a.exp() - b.exp()).abs().max()) for a, b in zip(ref, new))
        ratio_f = ""
        if not args.no_flops:
            f_ref = flops(lambda: run(model, tok, method, layer, hp, stats, tm, work[:4], None))
            f_new = flops(lambda: run(model, tok, method, layer, hp, stats, tm, work[:4], engine))
            ratio_f = f"{f_ref / f_new:.2f}"
        n = len(work)
        print(f"{method:7s} {n / t_ref:7.2f}/s {n / t_new:7.2f}/s {t_ref / t_new:8.2f}x {ratio_f:>11s} {dp:9.1e}")
        if cpu_peak is not None and not args.no_flops:
            k = len(work[:4])
            print(f"        FLOP/s per-fact {f_ref * n / k / t_ref / 1e9:.1f} G, engine {f_new * n / k / t_new / 1e9:.1f} G "
                  f"= {100 * f_ref * n / k / t_ref / 1e9 / cpu_peak:.0f}% / {100 * f_new * n / k / t_new / 1e9 / cpu_peak:.0f}% "
                  f"of this machine's matmul ({cpu_peak:.0f} GFLOP/s, 2048^2, {args.threads} thread(s))")  # fmt: skip
        if next(model.parameters()).is_cuda and not args.no_flops:
            f_all = flops(lambda: run(model, tok, method, layer, hp, stats, tm, work, engine))
            tflops = f_all / t_new / 1e12
            print(f"        engine: {tflops:.1f} TFLOP/s = {100 * tflops / args.peak_tflops:.1f}% of "
                  f"{args.peak_tflops:.0f} TFLOP/s peak")  # fmt: skip
    if next(model.parameters()).is_cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
