"""Rule tune_hparams: one (variant, method) of the tuning stage (paper App. A).

Edits the first ``n_facts`` eligible facts of the variant's edit inputs at the tuning layer once
per grid candidate (the method's settings with the candidate's values over them), then writes
every candidate's mean scores and the chosen values (locedit.editing.tuning).
"""

import logging

import torch

from locedit.editing.driver import engine_options, method_resources, run_edit_job
from locedit.editing.tuning import SelectionRule, candidate_table, candidates, chosen_values
from locedit.io import read_json, write_json, write_parquet
from locedit.modeling import load_model
from locedit.workflow import log_stream, setup_logging

logger = logging.getLogger(__name__)


def first_cases(paths, n: int) -> list[dict]:
    """The first ``n`` cases of the edit-input shards, in record order."""
    cases = [c for path in paths for c in read_json(path)["cases"]]
    return cases[:n]


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p, w = snakemake.params, snakemake.wildcards
    cases = first_cases(list(snakemake.input.inputs), int(p.n_facts))
    if not cases:
        raise ValueError(f"tuning {w.method} / {w.variant}: no eligible facts in the edit inputs")
    model, tok = load_model(**p.model)
    stats, templates = method_resources(
        w.method, model, snakemake.input.get("stats"), snakemake.input.get("templates")
    )
    results = []
    for values in candidates(p.grid):
        logger.info("%s / %s, layer %d, %d facts: candidate %s", w.variant, w.method, p.layer, len(cases), values)
        with log_stream(snakemake) as progress:
            rows = run_edit_job(
                model, tok, cases, w.method, int(p.layer), {**p.hparams, **values},
                progress=progress, engine=engine_options(p.engine), stats=stats, context_templates=templates,
                aggregation=p.aggregation, essence_cap=p.essence["cap"],
                essence_max_tokens=p.essence["max_tokens"], batch_size=p.batch_size,
            )  # fmt: skip
        results.append(rows)
    table = candidate_table(w.variant, w.method, int(p.layer), p.grid, results, SelectionRule(**p.selection))
    chosen = table[table["chosen"]].iloc[0]
    logger.info("chosen %s (%s): rewrite %.3f, paraphrase %.3f, neighborhood %.3f", chosen["values"],
                chosen["chosen_by"], chosen["rewrite_score"], chosen["paraphrase_score"],
                chosen["neighborhood_score"])  # fmt: skip
    write_parquet(table, snakemake.output.candidates)
    write_json({"values": chosen_values(table), "chosen_by": chosen["chosen_by"],
                "candidate": int(chosen["candidate"])}, snakemake.output.chosen)  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
