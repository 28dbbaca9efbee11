"""Benchmark: batched Causal Tracing engine vs the one-pass-per-(token, layer) baseline.

Both run in the same process on the same facts with the same noise draws; the script checks they
agree (max |Δp| and max relative Δ) and prints times and the speed-up.

CPU (default)::

    python benchmarks/bench_tracing.py                      # toy model if built, else random GPT-2
    python benchmarks/bench_tracing.py --model resources/models/toy-<key>

GPU, random GPT-J-shaped model in float16 (no weights needed; batched engine only)::

    python benchmarks/bench_tracing.py --gptj --device cuda --dtype float16 --facts 8

FLOPs are those of the linear layers, counted from the shapes actually computed (a separate,
untimed run with counting hooks); the GPU mode also reports facts/second and the achieved matmul
TFLOP/s as a fraction of ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from locedit.api import toy_dir  # noqa: E402
from locedit.tracing.passes import SuffixArgsCache  # noqa: E402
from locedit.tracing.reference import naive_trace  # noqa: E402
from locedit.tracing.trace import FactTracer  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "counterfact_sample_5.json"
TOY = toy_dir(REPO / "config.yaml")  # the toy of the shipped config (resources/models/toy-<key>)
WORLD_RECORDS = REPO / "resources" / "world" / "records.json"


def fixture_tokenizer():
    """The test suite's tiny BPE (trained on the fixture texts in a second)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    texts = []
    for rec in json.loads(FIXTURE.read_text()):
        rw = rec["requested_rewrite"]
        texts.append(rw["prompt"].format(rw["subject"]) + " " + rw["target_true"]["str"])
        texts += rec["paraphrase_prompts"] + rec["neighborhood_prompts"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    tok = GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tok.pad_token = tok.eos_token
    return tok


def fixture_facts(n: int, path: Path = FIXTURE) -> list[tuple[str, str, str]]:
    """The first ``n`` (prompt, subject, true target) of a CounterFact-format file (cycled)."""
    recs = json.loads(Path(path).read_text())
    facts = [
        (
            r["requested_rewrite"]["prompt"],
            r["requested_rewrite"]["subject"],
            r["requested_rewrite"]["target_true"]["str"],
        )
        for r in recs
    ]
    return [facts[i % len(facts)] for i in range(n)]


def build(args):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTJConfig

    dtype = getattr(torch, args.dtype)
    if args.model:
        from locedit.modeling import load_model

        model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
        return model, tok, f"{args.model}"
    tok = fixture_tokenizer()
    torch.manual_seed(0)
    if args.gptj:
        cfg = GPTJConfig(vocab_size=50400)  # GPT-J-6B shape: 28 layers, n_embd 4096, 16 heads
        if args.smoke:  # a small GPT-J for checking this code path on a CPU
            cfg = GPTJConfig(vocab_size=1024, n_layer=3, n_embd=64, n_head=4, rotary_dim=8)
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        model.to(args.device)
        desc = (
            "random GPT-J-6B-shaped model (GPTJConfig defaults, vocab 50400)"
            if not args.smoke
            else "random 3-layer GPT-J (smoke test)"
        )
    elif TOY.joinpath("config.json").exists() and not args.random:
        from locedit.modeling import load_model

        model, tok = load_model(str(TOY), dtype=args.dtype, device=args.device)
        return model, tok, f"toy model {TOY}"
    else:
        vocab = max(args.vocab, len(tok))
        cfg = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=4, vocab_size=vocab)
        model = GPT2LMHeadModel(cfg).to(args.device, dtype)
        desc = f"random GPT-2 ({args.layers} layers, n_embd {args.width}, vocab {vocab})"
    model.eval().requires_grad_(False)
    return model, tok, desc


def linear_flops(model, fn) -> float:
    """Matmul FLOPs of the linear layers (projections, MLP, unembedding) while ``fn()`` runs,
    counted from the shapes actually computed: 2 · tokens · d_in · d_out per call of every
    ``nn.Linear`` / ``Conv1D``. Attention scores (4·S·d per token and layer, a few % here) are
    not counted. Hooks slow a run down, so this is a separate, untimed run.
    """
    from transformers.pytorch_utils import Conv1D

    total = [0]

    def count(module, inputs):
        x = inputs[0]
        total[0] += 2 * (x.numel() // x.shape[-1]) * module.weight.numel()

    handles = [
        m.register_forward_pre_hook(count)
        for m in model.modules()
        if isinstance(m, (torch.nn.Linear, Conv1D))
    ]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return float(total[0])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", help="model directory or hub id (default: toy model or random GPT-2)"
    )
    ap.add_argument(
        "--random", action="store_true", help="use a random GPT-2 even if the toy model exists"
    )
    ap.add_argument("--gptj", action="store_true", help="random GPT-J-shaped model (use with cuda)")
    ap.add_argument("--smoke", action="store_true", help="with --gptj: a 3-layer GPT-J (CPU check)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=1024, help="random GPT-2 vocabulary (toy: 1024)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared box)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--facts", type=int, default=5)
    ap.add_argument(
        "--records",
        help="CounterFact-format JSON of the facts traced (default: the toy world's records "
        f"{WORLD_RECORDS.relative_to(REPO)} with the toy model, else the 5-record test fixture)",
    )
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--kind", default="mlp")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--noise-std", type=float, default=0.1)
    ap.add_argument("--row-budget", type=int, default=512)
    ap.add_argument("--no-naive", action="store_true", help="skip the baseline")
    ap.add_argument(
        "--atp", action="store_true",
        help="also time attribution patching (kind atp: the first-order estimate of --kind mlp) "
        "against the batched engine on the same facts, and report their agreement",
    )  # fmt: skip
    ap.add_argument(
        "--naive-from-subject",
        action="store_true",
        help="baseline traces tokens from the subject on (default: every token, as the authors)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (minimum reported)")
    ap.add_argument(
        "--naive-facts",
        type=int,
        default=None,
        help="run the baseline on the first N facts only (it is slow on big models)",
    )
    ap.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense fp16/bf16 peak (H100/H200 SXM)"
    )
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    model, tok, desc = build(args)
    records = args.records or (
        WORLD_RECORDS if desc.startswith("toy model") and WORLD_RECORDS.exists() else FIXTURE
    )
    facts = fixture_facts(args.facts, records)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(
        f"model: {desc}; device {args.device} {args.dtype}; torch threads {torch.get_num_threads()}"
    )
    print(f"facts: first {len(facts)} of {records}")
    print(
        f"{len(facts)} facts, kind={args.kind}, window={args.window}, samples={args.samples}, "
        f"row_budget={args.row_budget}"
    )

    kw = dict(noise_std=args.noise_std, samples=args.samples, seed=0)
    naive_kw = dict(from_subject=args.naive_from_subject)

    def run_batched(fs):
        arg_cache = SuffixArgsCache(model)  # one per round, as one per tracing job
        return [
            FactTracer(
                model, tok, *f, row_budget=args.row_budget, arg_cache=arg_cache, **kw
            ).restore(args.kind, args.window)
            for f in fs
        ]

    def run_naive(fs):
        return [
            naive_trace(model, tok, *f, kind=args.kind, window=args.window, **kw, **naive_kw)
            for f in fs
        ]

    def run_atp(fs):
        arg_cache = SuffixArgsCache(model)
        return [
            FactTracer(model, tok, *f, row_budget=args.row_budget, arg_cache=arg_cache, **kw)
            .attribute(args.window)
            for f in fs
        ]

    n_naive = 0 if args.no_naive else len(facts) if args.naive_facts is None else args.naive_facts
    n_naive = min(n_naive, len(facts))
    # warm-up (kernels, allocator) on one fact
    run_batched(facts[:1])
    if n_naive:
        naive_trace(model, tok, *facts[0], kind=args.kind, window=1, **kw, **naive_kw)
    sync()
    # Rounds alternate the two implementations; the minimum per implementation is reported,
    # which is robust to other processes sharing the CPU.
    t_batched, t_naive, t_atp = [], [], []
    if args.atp:
        run_atp(facts[:1])
    for _ in range(args.rounds):
        if args.atp:
            t0 = time.perf_counter()
            estimates = run_atp(facts)
            sync()
            t_atp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = run_batched(facts)
        sync()
        t_batched.append(time.perf_counter() - t0)
        if n_naive:
            t0 = time.perf_counter()
            naive = run_naive(facts[:n_naive])
            sync()
            t_naive.append(time.perf_counter() - t0)
    flops = linear_flops(model, lambda: run_batched(facts))
    tb = min(t_batched)
    print(
        f"batched engine: {tb:.3f} s for {len(facts)} facts ({len(facts) / tb:.2f} facts/s); "
        f"rounds {', '.join(f'{t:.2f}' for t in t_batched)}"
    )
    print(f"linear-layer FLOPs per fact, batched: {flops / len(facts):.3e}")
    if args.atp:
        from scipy.stats import spearmanr

        ta = min(t_atp)
        rhos = [
            spearmanr(b.restored[b.subject_range[0]:].ravel(), e.restored[e.subject_range[0]:].ravel()).statistic
            for b, e in zip(batched, estimates)
        ]
        print(
            f"attribution patching: {ta:.3f} s for {len(facts)} facts ({len(facts) / ta:.2f} facts/s); "
            f"rounds {', '.join(f'{t:.2f}' for t in t_atp)}"
        )
        print(f"SPEED-UP AtP vs batched exact tracing (per fact, incl. the clean/noised pass): "
              f"{tb / ta:.1f}x; Spearman rho over cells, median {np.nanmedian(rhos):.3f} "
              f"(min {np.nanmin(rhos):.3f})")
    if args.device.startswith("cuda"):
        tflops = flops / tb / 1e12
        print(
            f"achieved {tflops:.1f} TFLOP/s = {100 * tflops / args.peak_tflops:.1f}% of "
            f"{args.peak_tflops:.0f} TFLOP/s peak; peak GPU memory "
            f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        )
    if not n_naive:
        return
    flops_naive = linear_flops(model, lambda: run_naive(facts[:n_naive]))
    flops_same = linear_flops(model, lambda: run_batched(facts[:n_naive]))
    print(
        f"linear-layer FLOPs of the baseline's {n_naive} facts: batched {flops_same:.3e}, naive "
        f"{flops_naive:.3e} (ratio {flops_naive / flops_same:.2f})"
    )
    tn = min(t_naive)
    print(
        f"naive baseline: {tn:.3f} s for {n_naive} facts ({n_naive / tn:.3f} facts/s); "
        f"rounds {', '.join(f'{t:.2f}' for t in t_naive)}"
    )
    diff = max(float(np.abs(b.restored - n[2]).max()) for b, n in zip(batched, naive))
    rel = max(
        float(np.abs(b.restored / np.maximum(n[2], 1e-30) - 1).max()) for b, n in zip(batched, naive)
    )
    diff_clean = max(abs(b.p_clean - n[0]) + abs(b.p_noised - n[1]) for b, n in zip(batched, naive))
    print(
        f"agreement: max |Δ restored| = {diff:.2e}, max relative = {rel:.2e}, "
        f"|Δ p_clean|+|Δ p_noised| = {diff_clean:.2e}"
    )
    speedup = (tn / n_naive) / (tb / len(facts))
    print(f"SPEED-UP batched vs naive (per fact): {speedup:.1f}x")
    if args.dtype == "float32" and diff > 1e-5:
        raise SystemExit("batched and naive tracing disagree beyond 1e-5")


if __name__ == "__main__":
    main()
