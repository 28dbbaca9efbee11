"""Benchmark: the post-edit evaluation of edit jobs against a straightforward baseline, in one process.

The evaluation (``locedit.editing.evaluate.evaluate_case``) scores every probe (prompt, target)
pair of a case and the perplexity of its essence texts. The baseline scores each pair on its own
row with the model as ``transformers`` builds it (one row per pair, the five-kernel GELU):
``locedit.scoring.target_logprobs`` plus the same perplexity pass. The evaluation reads pairs
whose row prefixes another pair's row from that row and runs under the fused GELU. Printed:
milliseconds per case of each, their ratio, and the largest relative difference of any
probability or perplexity between the two (float rounding).

Defaults: the toy model and the prepared edit inputs of a default run (``snakemake --cores 2``
first, or ``--root`` a directory holding one), error injection and fact forcing, one thread::

    python benchmarks/bench_evaluation.py --root /path/to/run --cases 60

The real-model preset's model and inputs (after a run of ``config/smollm2.yaml``), two threads::

    python benchmarks/bench_evaluation.py --root RUN --model RUN/resources/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e \
        --results RUN/results/smollm2-135m/known --variants error_injection --cases 20 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from locedit import kernels  # noqa: E402
from locedit.adapters import d_model  # noqa: E402
from locedit.api import toy_dir  # noqa: E402
from locedit.editing import essence, evaluate  # noqa: E402
from locedit.editing.variants import case_noise  # noqa: E402
from locedit.io import read_json  # noqa: E402
from locedit.modeling import load_model  # noqa: E402
from locedit.noise import noised_subject  # noqa: E402
from locedit.registry.variants import ERROR_INJECTION, FACT_FORCING  # noqa: E402
from locedit.scoring import gather_target_logprobs, make_batch  # noqa: E402


@torch.no_grad()
def baseline(model, tok, case, noise):
    """One row per (prompt, target) pair, unfused model: the straightforward evaluation."""
    pairs = {(p, t, fam): None for fam, _, _, p, t in evaluate.probe_plan(case)}
    prompts, targets = [p for p, _, _ in pairs], [t for _, t, _ in pairs]
    batch = make_batch(tok, prompts, targets)
    fwd = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    if noise is None:
        logits = model(**fwd).logits
    else:
        spans = [evaluate._noise_span(tok, case, p, fam) for p, _, fam in pairs]
        with noised_subject(model, spans, noise):
            logits = model(**fwd).logits
    probs = dict(zip(pairs, gather_target_logprobs(logits, batch).exp().tolist()))
    ppl = essence.perplexities(model, tok, case["essence_texts"], subject=case["subject"], noise=noise)
    return probs, sum(ppl) / len(ppl)


def current(model, tok, case, noise):
    probs = evaluate.probe_probabilities(model, tok, case, noise=noise)
    out = {}
    for (fam, role, i, p, t) in evaluate.probe_plan(case):
        out[(p, t, fam)] = probs[fam][role][i]
    ppl = essence.perplexities(model, tok, case["essence_texts"], subject=case["subject"], noise=noise)
    return out, sum(ppl) / len(ppl)


def timed(fn, model, tok, cases, noises):
    for c, n in zip(cases[:3], noises):  # warm-up
        fn(model, tok, c, n)
    t0 = time.perf_counter()
    out = [fn(model, tok, c, n) for c, n in zip(cases, noises)]
    return out, (time.perf_counter() - t0) / len(cases) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO)
    ap.add_argument("--model", type=Path, help="default: the toy of ROOT/config.yaml")
    ap.add_argument("--results", type=Path, help="default: ROOT/results/toy/synthetic")
    ap.add_argument("--variants", nargs="+", default=[ERROR_INJECTION.name, FACT_FORCING.name])
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(str(args.model or toy_dir(args.root / "config.yaml")), device="cpu")
    d = d_model(model)
    results = args.results or args.root / "results/toy/synthetic"
    for variant in args.variants:
        inputs = results / f"editing/inputs/{variant}/0.json"
        cases = read_json(inputs)["cases"][: args.cases]
        noises = [case_noise(c, tok, d) for c in cases]
        # The baseline without the fused GELU: evaluate's and essence's swaps made no-ops.
        with _unfused():
            base, t_base = timed(baseline, model, tok, cases, noises)
        ours, t_ours = timed(current, model, tok, cases, noises)
        worst = 0.0
        for (pa, ea), (pb, eb) in zip(base, ours):
            worst = max(worst, abs(ea - eb) / ea, *(abs(pa[k] - pb[k]) / max(pa[k], 1e-30) for k in pa))
        print(f"{variant}: baseline {t_base:.1f} ms/case, evaluation {t_ours:.1f} ms/case, "
              f"{t_base / t_ours:.2f}x; max relative difference {worst:.1e} ({len(cases)} cases)")


@contextlib.contextmanager
def _unfused():
    saved = kernels.fused_activations, evaluate.fused_activations, essence.fused_activations
    noop = lambda model: contextlib.nullcontext()  # noqa: E731
    evaluate.fused_activations = essence.fused_activations = noop
    try:
        yield
    finally:
        kernels.fused_activations, evaluate.fused_activations, essence.fused_activations = saved


if __name__ == "__main__":
    main()
