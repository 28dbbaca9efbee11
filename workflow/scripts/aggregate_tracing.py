"""Combine tracing shards; per-layer effects (tracing.parquet) and the o_noise table."""

import pandas as pd

from locedit.io import write_parquet
from locedit.tracing.tables import layer_effects
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    log = setup_logging(snakemake)
    p = snakemake.params
    grid = pd.concat([pd.read_parquet(f) for f in snakemake.input.grids], ignore_index=True)
    facts = pd.concat([pd.read_parquet(f) for f in snakemake.input.facts], ignore_index=True)
    effects = layer_effects(
        grid, facts, p.runs, definition=p.effect_definition, min_total_effect=p.min_total_effect
    )
    ok = facts[facts["status"] == "ok"]
    o_noise = ok[["case_id", "o_noise", "o_noise_equals_true", "target"]].rename(
        columns={"target": "target_true"}
    )
    write_parquet(grid, snakemake.output.grid)
    write_parquet(facts, snakemake.output.facts)
    write_parquet(effects, snakemake.output.effects)
    write_parquet(o_noise.reset_index(drop=True), snakemake.output.o_noise)
    log.info(
        "%d facts; status per (fact, run, layer): %s; o_noise == target for %d of %d",
        len(facts),
        effects["status"].value_counts().to_dict(),
        int(o_noise["o_noise_equals_true"].sum()),
        len(o_noise),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
