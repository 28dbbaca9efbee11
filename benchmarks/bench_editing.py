"""Benchmark: edits per second of each edit method, time split into optimisation / update / evaluation.

Each edit is applied, evaluated (teacher-forced p(target) on the rewrite, paraphrase and
neighborhood prompts of a fixture record, as the edit jobs do) and undone. Per method it prints
mean seconds per edit for

* ``opt``: everything before the weight write (ROME: k*, v* optimisation, bare-prompt pass;
  MEMIT: z optimisation plus each layer's keys and residual),
* ``update``: the covariance solves and weight writes,
* ``eval``: the post-edit scoring,

and compares the update against the authors' straightforward version in the same run: MEMIT
solves the full ``d_mlp × d_mlp`` system ``(λC + kkᵀ) x = k`` in float64 for every layer of every
edit, while locedit reuses one cached Cholesky factor per layer (Woodbury), ROME multiplies
by an explicit inverse (cached per layer by both). The one-off per-layer factorisation is
reported separately (``setup``). With ``--stats`` it also times the covariance pass: one pass for
all layers vs the authors' one pass per layer.

CPU (default)::

    python benchmarks/bench_editing.py                      # toy model if built, else random GPT-2
    python benchmarks/bench_editing.py --stats              # + covariance one-pass vs per-layer

GPU, random GPT-J-shaped model in float16 with a random SPD C per layer (no corpus pass)::

    python benchmarks/bench_editing.py --gptj --device cuda --dtype float16 --edits 4

ROME/MEMIT math runs in float32 (v*, z) and float64 (solves) whatever the model dtype.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from locedit.adapters import edit_weight, is_conv1d, n_layers  # noqa: E402
from locedit.api import toy_dir  # noqa: E402
from locedit.editing.covariance import CovarianceStore, accumulate_second_moments  # noqa: E402
from locedit.registry.methods import FT1, FT5, MEMIT, ROME  # noqa: E402
from locedit.editing.memit import apply_memit  # noqa: E402
from locedit.layer_windows import edit_window as layer_window  # noqa: E402
from locedit.editing.rome import apply_rome  # noqa: E402
from locedit.editing.types import EditRequest, restore  # noqa: E402
from locedit.scoring import target_logprobs  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "counterfact_sample_5.json"
TOY = toy_dir(REPO / "config.yaml")  # the toy of the shipped config (resources/models/toy-<key>)

#: method → (apply function, hparams overrides for the benchmark). FT: the authors' GPT-J code
#: values (lr 5e-4, 25 steps; early stopping off so every edit runs all steps).
FT_HP = {"lr": 5e-4, "num_steps": 25, "norm_constraint": 1e-4, "stop_loss": 0.0}
METHODS = {
    ROME.name: (apply_rome, {}),
    MEMIT.name: (apply_memit, {}),
    **{m.name: (m.function(), {**FT_HP, **m.fixed}) for m in (FT1, FT5)},
}
FT_METHODS = (FT1.name, FT5.name)
MEMIT = MEMIT.name

# ROME's 21 templates are ~4 and ~9 sampled tokens + ". {}"; fixed text keeps the GPU run free
# of sampling from a random model (whose vocabulary exceeds the benchmark tokenizer's).
SHORT = ["The team won.", "In the wake of.", "It was a.", "She said that.", "We know it."]
LONG = ["The city council met on Monday to discuss the budget.", "After the war, many families moved west."]


def templates(method: str) -> list[str]:
    if method == MEMIT:
        return ["{}"] + [f"{w} said the news was good. {{}}" for w in ("The", "Therefore", "Because", "I", "You")]
    return ["{}"] + [f"{SHORT[i % 5]} {{}}" for i in range(10)] + [f"{LONG[i % 2]} {{}}" for i in range(10)]


def fixture_tokenizer():
    """The test suite's tiny BPE (trained on the fixture texts in a second)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    texts = []
    for rec in json.loads(FIXTURE.read_text()):
        rw = rec["requested_rewrite"]
        texts.append(rw["prompt"].format(rw["subject"]) + " " + rw["target_true"]["str"] + " " + rw["target_new"]["str"])
        texts += rec["paraphrase_prompts"] + rec["neighborhood_prompts"]
    texts += SHORT + LONG
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.pad_token = tok.eos_token
    return tok


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The options :func:`build` reads: which model, on which device and dtype."""
    ap.add_argument("--model", help="model directory or hub id (default: toy model or random GPT-2)")
    ap.add_argument("--random", action="store_true", help="use a random GPT-2 even if the toy model exists")
    ap.add_argument("--gptj", action="store_true", help="random GPT-J-shaped model (use with cuda)")
    ap.add_argument("--gptj-config", default="{}", help="JSON overrides of GPTJConfig (testing)")
    ap.add_argument("--layers", type=int, default=6, help="random GPT-2: blocks")
    ap.add_argument("--width", type=int, default=128, help="random GPT-2: n_embd")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")


def build(args):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTJConfig

    dtype = getattr(torch, args.dtype)
    if args.model or (TOY.joinpath("config.json").exists() and not args.random and not args.gptj):
        from locedit.modeling import load_model

        src = args.model or str(TOY)
        model, tok = load_model(src, dtype=args.dtype, device=args.device)
        return model, tok, src
    tok = fixture_tokenizer()
    torch.manual_seed(0)
    if args.gptj:
        # GPT-J-6B shape: 28 layers, n_embd 4096, d_mlp 16384 (--gptj-config overrides, for testing).
        cfg = GPTJConfig(vocab_size=50400, **json.loads(args.gptj_config))
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        desc = "random GPT-J-6B-shaped model (GPTJConfig defaults)"
    else:
        cfg = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=4, vocab_size=len(tok))
        model = GPT2LMHeadModel(cfg).to(args.device, dtype)
        desc = f"random GPT-2 ({args.layers} layers, n_embd {args.width})"
    model.eval().requires_grad_(False)
    return model, tok, desc


def d_mlp(model) -> int:
    w = edit_weight(model, 0)
    return w.shape[0] if is_conv1d(model) else w.shape[1]


def random_stats(model, seed: int) -> CovarianceStore:
    """A random SPD C per layer (built on the model's device when first asked for)."""
    dev = next(model.parameters()).device
    d = d_mlp(model)

    def loader(layer: int) -> torch.Tensor:
        g = torch.Generator(device=dev).manual_seed(seed + layer)
        a = torch.randn(d, d, generator=g, device=dev) / d**0.5
        return a @ a.T + 0.1 * torch.eye(d, device=dev)

    return CovarianceStore(loader, device=dev)


def sync(model) -> None:
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def requests(n: int) -> list[tuple[EditRequest, list[str], list[str]]]:
    """(request, evaluation prompts, their targets) cycling over the fixture records."""
    out = []
    recs = json.loads(FIXTURE.read_text())
    for i in range(n):
        r = recs[i % len(recs)]
        rw = r["requested_rewrite"]
        req = EditRequest(int(r["case_id"]), rw["prompt"], rw["subject"], rw["target_new"]["str"])
        prompts = [rw["prompt"].format(rw["subject"])] + r["paraphrase_prompts"] + r["neighborhood_prompts"]
        targets = [rw["target_new"]["str"]] * (1 + len(r["paraphrase_prompts"])) + [rw["target_true"]["str"]] * len(r["neighborhood_prompts"])
        out.append((req, prompts, targets))
    return out


def bench_method(model, tok, method, layer, stats, n_edits, hparams):
    fn, extra = METHODS[method]
    hp = {**extra, **hparams}
    tm = templates(method)
    rows = []
    for req, prompts, targets in requests(n_edits):
        sync(model)
        t0 = time.perf_counter()
        snap, diag = fn(model, tok, req, layer, hp, stats, tm)
        sync(model)
        t1 = time.perf_counter()
        target_logprobs(model, tok, prompts, targets, batch_size=64)
        sync(model)
        t2 = time.perf_counter()
        restore(model, snap)
        upd = diag["update_seconds"] if method in FT_METHODS else (t1 - t0) - diag["opt_seconds"]
        rows.append({"opt": diag["opt_seconds"], "update": upd, "eval": t2 - t1,
                     "total": t2 - t0, "p_target": diag.get("p_target", float("nan"))})  # fmt: skip
    return rows


def baseline_update_seconds(model, stats, method, layer, hparams, reps: int = 3) -> float:
    """The authors' per-edit update solves, with random keys/residuals of the right shapes."""
    dev = next(model.parameters()).device
    d = d_mlp(model)
    k = torch.randn(d, 1, device=dev, dtype=torch.float64)
    lam = float(hparams.get("mom2_update_weight", 15000.0))
    layers = layer_window(layer, 5, n_layers(model)) if method == MEMIT else [layer]
    times = []
    for _ in range(reps):
        sync(model)
        t0 = time.perf_counter()
        for l in layers:
            c = stats.mom2(l).to(dev, torch.float64)  # the authors keep C cached (CPU), moved per use
            if method == MEMIT:
                torch.linalg.solve(lam * c + k @ k.T, k)
            else:
                torch.linalg.inv(c.float()) @ k.float()  # ROME: cached inverse, here recomputed
        sync(model)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def restore_vs_reload(model, tok, method: str, layer: int, reps: int = 3) -> tuple[float, float]:
    """Undoing an edit: copying back the snapshot's rows vs reloading a full state-dict copy
    (the straightforward undo, which also doubles the model's memory)."""
    fn, hp = METHODS[method]
    req = requests(1)[0][0]
    full = {k: v.clone() for k, v in model.state_dict().items()}
    ours, base = [], []
    for _ in range(reps):
        snap, _ = fn(model, tok, req, layer, {**hp, "num_steps": 1}, None, [])
        sync(model)
        t0 = time.perf_counter()
        restore(model, snap)
        sync(model)
        t1 = time.perf_counter()
        model.load_state_dict(full)
        sync(model)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        base.append(t2 - t1)
    return statistics.median(base), statistics.median(ours)


def bench_stats(model, tok, n_docs: int):
    """Covariance collection: one pass for all layers vs one pass per layer (authors)."""
    recs = json.loads(FIXTURE.read_text())
    docs = [p for r in recs for p in r["paraphrase_prompts"] + r["neighborhood_prompts"] + r["attribute_prompts"]]
    docs = [docs[i % len(docs)] for i in range(n_docs)]
    layers = list(range(n_layers(model)))
    t0 = time.perf_counter()
    one = accumulate_second_moments(model, tok, docs, layers, max_length=128, batch_size=16)
    t1 = time.perf_counter()
    for l in layers:
        per = accumulate_second_moments(model, tok, docs, [l], max_length=128, batch_size=16)
        assert torch.allclose(per.sums[l], one.sums[l], rtol=1e-4, atol=1e-4)
    t2 = time.perf_counter()
    print(f"stats over {n_docs} docs, {len(layers)} layers: one pass {t1 - t0:.2f} s, per-layer passes "
          f"{t2 - t1:.2f} s, speed-up {(t2 - t1) / (t1 - t0):.1f}x (sums agree)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--edits", type=int, default=5)
    ap.add_argument("--layer", type=int, default=None, help="edit layer (default: n_layers // 4 + 1)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--stats", action="store_true", help="also time the covariance pass (CPU-sized)")
    ap.add_argument("--stats-docs", type=int, default=200)
    args = ap.parse_args()
    model, tok, desc = build(args)
    layer = args.layer if args.layer is not None else n_layers(model) // 4 + 1
    print(f"{desc} on {args.device} ({args.dtype}); edit layer {layer}; d_mlp {d_mlp(model)}; {args.edits} edits/method")
    stats = random_stats(model, seed=0)
    for method in args.methods:
        hp = {}
        layers = layer_window(layer, 5, n_layers(model)) if method == MEMIT else [layer]
        if method in FT_METHODS:
            layers = []  # FT reads no covariance statistics
        sync(model)
        t0 = time.perf_counter()
        for l in layers:
            stats.factor(l)
        sync(model)
        setup = time.perf_counter() - t0
        bench_method(model, tok, method, layer, stats, 1, hp)  # warm-up (kernels, allocator)
        rows = bench_method(model, tok, method, layer, stats, args.edits, hp)
        mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
        if method in FT_METHODS:
            print(f"{method:6s} {1 / mean['total']:7.2f} edits/s | per edit: opt {mean['opt']:.3f} s, "
                  f"update (L-inf projections) {mean['update']:.4f} s, eval {mean['eval']:.3f} s")  # fmt: skip
            base, ours = restore_vs_reload(model, tok, method, layer)
            print(f"       undo: full state-dict reload {base:.4f} s -> snapshot restore {ours:.4f} s "
                  f"({base / ours:.1f}x)")  # fmt: skip
            continue
        base = baseline_update_seconds(model, stats, method, layer, hp)
        ours = statistics.median(r["update"] for r in rows)
        print(f"{method:6s} {1 / mean['total']:7.2f} edits/s | per edit: opt {mean['opt']:.3f} s, "
              f"update {mean['update']:.4f} s, eval {mean['eval']:.3f} s | setup (factorise "
              f"{len(layers)} layer(s), once per job) {setup:.2f} s")  # fmt: skip
        print(f"       update vs authors' per-edit solve{'s' if method == 'memit' else ''}: "
              f"{base:.4f} s -> {ours:.4f} s ({base / ours:.1f}x)")  # fmt: skip
    if next(model.parameters()).is_cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if args.stats:
        bench_stats(model, tok, args.stats_docs)


if __name__ == "__main__":
    main()
