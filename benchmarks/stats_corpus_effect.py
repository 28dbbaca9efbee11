"""How much ROME's efficacy depends on the corpus of its second-moment statistics C.

On a real model there is no offline copy of its training text; the real-model preset estimates C
from text the model samples itself (``editing.stats.corpus: sampled``). This edits the first N
known facts of a finished run with ROME (error injection) at two layers, once per corpus, and
prints the mean rewrite and neighborhood scores: the preset's sampled corpus, its first quarter
(a smaller sample of the same source), and, as a corpus of the wrong kind, the toy's invented
fact world (when built). Every edit is the one-fact API's (``locedit.edit``), statistics cached
under ``$LOCEDIT_CACHE`` per corpus content::

    python benchmarks/stats_corpus_effect.py \\
        --model resources/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e \\
        --run results/smollm2-135m/known --corpus resources/corpora/smollm2-135m/sampled-240x128.txt \\
        --config config/smollm2.yaml --facts 12 --layers 5 15
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import locedit  # noqa: E402
from locedit.registry.methods import ROME  # noqa: E402
from locedit.registry.variants import ERROR_INJECTION  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", required=True, help="results/{model}/{dataset} of a finished run")
    ap.add_argument("--corpus", required=True, help="the preset's statistics corpus")
    ap.add_argument("--config", default=str(REPO / "config" / "smollm2.yaml"),
                    help="config whose ROME hyperparameters are used")
    ap.add_argument("--facts", type=int, default=12)
    ap.add_argument("--layers", type=int, nargs="+", default=[5, 15])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    records = {r["case_id"]: r for r in json.loads((run / "records.json").read_text())}
    facts = pd.read_parquet(run / "facts.parquet")
    known = facts[facts["is_correct"]]["case_id"].tolist()[: args.facts]
    hp = locedit.config_hparams(ROME.name, ERROR_INJECTION.name, args.config)
    lines = Path(args.corpus).read_text().splitlines()
    tmp = Path(tempfile.mkdtemp())
    quarter = tmp / "quarter.txt"
    quarter.write_text("\n".join(lines[: len(lines) // 4]) + "\n")
    corpora = {f"sampled, {len(lines)} docs": args.corpus, f"sampled, {len(lines) // 4} docs": quarter}
    world = REPO / "resources" / "world" / "corpus.txt"
    if world.is_file():
        corpora["toy fact world (wrong kind)"] = world
    lm = locedit.load(args.model, device="cpu")
    rows = []
    for name, corpus in corpora.items():
        for layer in args.layers:
            t0 = time.perf_counter()
            for cid in known:
                rec = records[cid]
                rw = rec["requested_rewrite"]
                row = locedit.edit(lm, ROME.name, layer, rw["prompt"], rw["subject"],
                                   target_new=rw["target_new"]["str"], target_true=rw["target_true"]["str"],
                                   paraphrases=rec["paraphrase_prompts"], neighborhood=rec["neighborhood_prompts"],
                                   hparams=hp, stats_corpus=str(corpus), case_id=cid)
                rows.append({"corpus": name, "layer": layer + 1, "case_id": cid,
                             "rewrite": row["rewrite_score"], "neighborhood": row["neighborhood_score"]})
            print(f"{name}, layer {layer + 1}: {time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    table = df.groupby(["corpus", "layer"], sort=False)[["rewrite", "neighborhood"]].mean().round(3)
    print(f"\nROME, error injection, first {len(known)} known facts of {run} (layers 1-indexed):\n")
    print(table.to_markdown())


if __name__ == "__main__":
    main()
