"""The paper's regressions (+ clustered Wald, cross-validated, bootstrap and permutation
inference) on edit_vs_trace."""

import pandas as pd

from locedit.analysis.robust import RobustSettings
from locedit.analysis.study import run_study
from locedit.io import atomic_path
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    frames = run_study(
        pd.read_parquet(snakemake.input.table),
        window=p.window,
        metrics=list(p.metrics),
        robustness_metrics=list(p.robustness_metrics),
        min_rows=p.min_rows,
        robust=RobustSettings(
            replicates=p.bootstrap_replicates,
            permutations=p.permutations,
            seed=p.seed,
            confidence=p.confidence,
            cv_folds=p.cv_folds,
            cv_repeats=p.cv_repeats,
            wild_reps=p.wild_bootstrap_reps,
        ),
    )
    for name, frame in frames.items():
        with atomic_path(snakemake.output[name]) as tmp:
            frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
