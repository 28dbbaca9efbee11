"""ROME/MEMIT rewrite scores per layer on a trained model, for tuning edit hyperparameters.

Example (the default run's toy model and known facts, ROME error injection at layers 0 and 2,
the default config's ROME settings; the README's table varies steps, early stop and templates):

    python benchmarks/rome_layer_sweep.py --model resources/models/toy-<key> \
        --records results/toy/synthetic/records.json --facts results/toy/synthetic/facts.parquet \
        --corpus resources/world/<key>/corpus.txt --work /tmp/rome_sweep --n 31 --layers 0,2 \
        --rome-lengths '[[5, 5], [10, 5]]' \
        --hp '{"v_num_grad_steps": 60, "v_lr": 1.0, "v_weight_decay": 0.05, "kl_factor": 0.0625,
               "clamp_norm_factor": 12.0, "early_stop_loss": 0.02}'

Context templates are sampled with seed 0 (the default master seed) and cached in ``--work``
per ``--rome-lengths``. Without ``--facts``, known facts are found by greedy continuation.
"""
import argparse, json, statistics, time, torch
from pathlib import Path
from locedit.modeling import load_model
from locedit.scoring import target_logprobs, greedy_continuations, contains_target
from locedit.editing.compute_kv import generate_context_templates
from locedit.editing.covariance import compute_layer_stats, write_manifest, CovarianceStore
from locedit.editing.types import EditRequest, restore
from locedit.registry.methods import MEMIT, ROME, get_method
from locedit.adapters import n_layers
ap = argparse.ArgumentParser()
ap.add_argument("--model"); ap.add_argument("--records"); ap.add_argument("--corpus"); ap.add_argument("--work")
ap.add_argument("--n", type=int, default=20); ap.add_argument("--methods", nargs="+", default=[ROME.name])
ap.add_argument("--layers", default=None); ap.add_argument("--hp", default="{}"); ap.add_argument("--minimize", action="store_true")
ap.add_argument("--facts", help="facts.parquet of the filter stage: edit its is_correct facts")
ap.add_argument("--rome-lengths", default="[[5, 5], [10, 5]]", help="ROME context-template [length, n] pairs")
a = ap.parse_args()
torch.set_num_threads(1)
model, tok = load_model(a.model, device="cpu")
recs = json.load(open(a.records))
work = Path(a.work); work.mkdir(exist_ok=True, parents=True)
if not (work / "stats" / "manifest.json").exists():
    t = time.time(); m = compute_layer_stats(model, tok, a.corpus, work / "stats", layers="all", batch_size=16); write_manifest(m, work / "stats")
    print("stats", time.time() - t, m["n_tokens"])
stats = CovarianceStore.from_dir(work / "stats", model=model)
lengths = json.loads(a.rome_lengths)
tm_path = work / ("templates_" + "_".join(f"{l}x{n}" for l, n in lengths) + ".json")
if not tm_path.exists():
    tm = generate_context_templates(model, tok, seed=0, top_k=5, rome_lengths=lengths, memit_prompts=["The", "Therefore", "Because", "I", "You"], memit_lengths=[[10, 5]])
    json.dump(tm, open(tm_path, "w"), indent=1)
tm = json.load(open(tm_path))
print(tm[ROME.templates][:4], tm[MEMIT.templates][:3])
# known facts
facts = []
if a.facts:
    import pandas as pd
    known = set(pd.read_parquet(a.facts).query("is_correct").case_id)
    facts = [r for r in recs if r["case_id"] in known][: a.n]
for r in ([] if a.facts else recs[: 4 * a.n]):
    rw = r["requested_rewrite"]
    cont = greedy_continuations(model, tok, [rw["prompt"].format(rw["subject"])], max_new_tokens=5)[0]
    if contains_target(cont, rw["target_true"]["str"]):
        facts.append(r)
    if len(facts) == a.n: break
print("known", len(facts))
hp = json.loads(a.hp)
layers = range(n_layers(model)) if a.layers is None else [int(x) for x in a.layers.split(",")]
for method in a.methods:
    fn = get_method(method).function()
    for layer in layers:
        rs, ps, ns, secs = [], [], [], []
        for r in facts:
            rw = r["requested_rewrite"]
            tgt = rw["target_true"]["str"] if a.minimize else rw["target_new"]["str"]
            req = EditRequest(r["case_id"], rw["prompt"], rw["subject"], tgt, minimize=a.minimize)
            prompts = [rw["prompt"].format(rw["subject"])] + r["paraphrase_prompts"]
            nb = r["neighborhood_prompts"]
            pre = target_logprobs(model, tok, prompts, [tgt] * len(prompts)).exp()
            nb_pre = target_logprobs(model, tok, nb, [rw["target_true"]["str"]] * len(nb)).exp() if nb else torch.zeros(0)
            t = time.time()
            snap, d = fn(model, tok, req, layer, hp, stats, tm[method])
            secs.append(time.time() - t)
            post = target_logprobs(model, tok, prompts, [tgt] * len(prompts)).exp()
            nb_post = target_logprobs(model, tok, nb, [rw["target_true"]["str"]] * len(nb)).exp() if nb else torch.zeros(0)
            restore(model, snap)
            if a.minimize:
                sc = ((pre - post) / pre).clamp(min=0)
            else:
                sc = (post - pre) / (1 - pre)
            rs.append(sc[0].item()); ps.append(sc[1:].mean().item() if len(sc) > 1 else float("nan"))
            if len(nb): ns.append((1 - (nb_post - nb_pre).abs() / ((nb_pre - .5).abs() + .5)).mean().item())
        print(f"{method} layer {layer}: rewrite {statistics.mean(rs):.3f} paraphrase {statistics.mean(ps):.3f} neighborhood {statistics.mean(ns) if ns else float('nan'):.3f} ({statistics.mean(secs):.2f} s/edit) last diag p_init {d['p_target_init']:.3f} p {d['p_target']:.3f} n_fwd {d['n_forward']} dn {d['delta_norm']:.2f} in {d['init_norm']:.2f} wd {d['weight_decay']:.3f} nll {d['nll']:.3f} kl {d['kl']:.3f}", flush=True)
