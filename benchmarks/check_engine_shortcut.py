"""How often the ROME/MEMIT engine skips replaying the edit layer, per precision.

The engine replays from block l + 1 when a delta on the MLP's output reaches block l's output
unchanged (``locedit.editing.engine._delta_passes_through``, checked per fact at the model's own
rounding). Counts the facts that take that shortcut in float32, float16 and bfloat16::

    python benchmarks/check_engine_shortcut.py --model RUN/resources/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e \\
        --results RUN/results/smollm2-135m/known --layer 5 --facts 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from locedit.editing import engine
from locedit.editing.types import EditRequest
from locedit.io import read_json
from locedit.modeling import load_model
from locedit.registry.methods import ROME


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--results", type=Path, required=True, help="a run's results/{model}/{dataset}")
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--templates", type=int, default=3, help="context templates per fact")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    templates = read_json(args.results / "editing" / "context_templates.json")
    templates = (templates[ROME.templates] if isinstance(templates, dict) else templates)[: args.templates]
    records = read_json(args.results / "records.json")[: args.facts]
    for dtype in ("float32", "float16", "bfloat16"):
        model, tok = load_model(args.model, dtype=dtype, device="cpu")
        taken = 0
        for r in records:
            rw = r["requested_rewrite"]
            req = EditRequest(r["case_id"], rw["prompt"], rw["subject"], rw["target_new"]["str"])
            fact = engine._prefix_pass(model, tok, 0, req, templates, args.layer, "mlp_out", "subject_last")
            taken += fact.first == args.layer + 1
        print(f"{dtype}: shortcut taken for {taken} of {len(records)} facts (layer {args.layer})")


if __name__ == "__main__":
    main()
