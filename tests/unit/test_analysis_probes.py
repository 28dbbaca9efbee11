"""The generalisation probes' tables: means per layer, counts of known routes, regressions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from locedit.analysis.probes import probe_counts, probe_regression_table, probe_table, probed
from locedit.editing.probes import COLUMNS, PROBE_METRICS


def _edits() -> pd.DataFrame:
    nan = float("nan")
    rows = []
    for variant, method, layer, alias, reverse, over in [
        ("error_injection", "rome", 0, 0.2, 0.0, 0.3),
        ("error_injection", "rome", 0, 0.4, nan, 0.1),
        ("error_injection", "rome", 3, nan, 0.5, -0.2),
        ("error_injection", "ft-1", 0, 0.9, 1.0, 0.0),
        ("fact_forcing", "rome", 0, nan, nan, nan),  # not probed: left out
    ]:
        row = dict.fromkeys(COLUMNS, nan)
        row.update(variant=variant, method=method, layer=layer, case_id=len(rows))
        row.update(rewrite_score=0.9, alias_score=alias, reverse_score=reverse)
        row.update(overreach_other_subjects=over)
        rows.append(row)
    return pd.DataFrame(rows)


def test_probe_table_means_per_layer_in_paper_order():
    table = probe_table(_edits())
    assert table[["Problem", "Method", "Layer"]].values.tolist() == [
        ["Error Injection", "FT-1", 1], ["", "ROME", 1], ["", "ROME", 4]]  # fmt: skip
    assert table["Alias"].tolist() == ["0.900", "0.300", "–"]  # NaN (route unknown) is skipped
    assert table["Reverse"].tolist() == ["1.000", "0.000", "0.500"]
    assert table["Over-reach, others"].tolist() == ["+0.000", "+0.200", "-0.200"]
    assert table["n"].tolist() == [1, 2, 1]


def test_probe_counts_and_probes_off():
    counts = probe_counts(_edits())
    assert counts["Edits"].tolist() == [1, 3] and counts["Alias known"].tolist() == [1, 2]
    off = _edits().assign(**{c: np.nan for c in PROBE_METRICS.values()})
    assert probed(off).empty and probe_table(off).empty and probe_counts(off).empty


def test_probe_regression_table_sets_probes_beside_rewrite():
    cell = {"variant": "error_injection", "method": "rome"}
    main = pd.DataFrame(
        [
            {**cell, "metric": "rewrite", "r2_layer": 0.5, "r2_diff": 0.01, "status": "ok"},
            {**cell, "metric": "alias", "r2_layer": 0.2, "r2_diff": 0.03, "status": "ok"},
            {
                **cell,
                "metric": "reverse",
                "r2_layer": 0.1,
                "r2_diff": 0.5,
                "status": "too_few_rows",
            },
        ]
    )
    table = probe_regression_table(main)
    assert table["Rewrite Layer"].tolist() == ["0.500"] and table["Alias Diff"].tolist() == [
        "0.030"
    ]
    assert table["Reverse Diff"].tolist() == ["–"]  # a cell that did not fit is not shown
    assert probe_regression_table(main[main["metric"] == "rewrite"]).empty
