"""Benchmark: the batched editing engine against the per-fact path, per method, in one process.

Both paths edit the same facts with the same hyperparameters, and every edit is evaluated
(teacher-forced p(target) on its rewrite, paraphrase and neighborhood prompts) and undone, as
edit jobs do. Printed per method: edits/second of each path and their ratio; FLOPs of each
(``torch.utils.flop_counter``: every matmul, attention and backward op, in a separate untimed
run) and their ratio; and the largest difference of any evaluated probability between the two
paths (they compute the same edits up to float rounding).

Defaults: the toy model (``resources/models/toy``, from ``snakemake --cores 2
resources/models/toy/config.json``), its world's records, the hyperparameters and context
templates of ``config.yaml`` (error injection), one thread::

    python benchmarks/bench_edit_engine.py                          # 24 edits per method
    python benchmarks/bench_edit_engine.py --variant fact_forcing   # other editing problems
    python benchmarks/bench_edit_engine.py --max-facts 8            # batch size sweep

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


def hparams(method: str, variant: str) -> dict:
    """``config.yaml``'s hyperparameters of ``method`` for ``variant`` (per_variant merged)."""
    section = dict(yaml.safe_load((REPO / "config.yaml").read_text())["editing"]["methods"][method])
    per = section.pop("per_variant", None) or {}
    return {**section, **(per.get(variant) or {})}


def cases(n: int, variant: str, d_model: int) -> list[tuple[EditRequest, list[str], list[str]]]:
    """(request, evaluation prompts, their targets) of the first ``n`` records (cycled)."""
    recs = json.loads((WORLD if WORLD.exists() else FIXTURE).read_text())
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, desc = build(args)
    from locedit.adapters import d_model, n_layers

    layer = args.layer if args.layer is not None else n_layers(model) // 4 + 1
    toy = "toy" in str(desc)
    ctx = json.loads(TOY_TEMPLATES.read_text()) if toy and TOY_TEMPLATES.exists() else None
    stats = random_stats(model, seed=0)
    configured = yaml.safe_load((REPO / "config.yaml").read_text())["editing"]["engine"]
    engine = {
        "row_budget": args.row_budget or configured["row_budget"],
        "max_facts": args.max_facts or configured["max_facts"],
    }
    work = cases(args.edits, args.variant, d_model(model))
    print(f"{desc} on {args.device} ({args.dtype}, {args.threads} thread(s)); {args.variant}, layer "
          f"{layer}; {args.edits} edits per method and path; engine {engine}")  # fmt: skip
    print(f"{'method':7s} {'per-fact':>10s} {'engine':>10s} {'speed-up':>9s} {'FLOP ratio':>11s} {'max |dp|':>9s}")
    for method in args.methods:
        hp = hparams(method, args.variant) if toy else {}
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
        if next(model.parameters()).is_cuda and not args.no_flops:
            f_all = flops(lambda: run(model, tok, method, layer, hp, stats, tm, work, engine))
            tflops = f_all / t_new / 1e12
            print(f"        engine: {tflops:.1f} TFLOP/s = {100 * tflops / args.peak_tflops:.1f}% of "
                  f"{args.peak_tflops:.0f} TFLOP/s peak")  # fmt: skip
    if next(model.parameters()).is_cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
