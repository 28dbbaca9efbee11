"""``snakemake --report`` builds a self-contained HTML report of a finished run, and every figure
the run produced is in it (registered with ``report()``, with a caption from workflow/report/)."""

from __future__ import annotations

import re

from tests.workflow.helpers import REPO
from tests.workflow.runs import TARGETS, reference_run, run


def _registered_captions() -> set[str]:
    """Caption files named by report() calls in the rule files."""
    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"\.\./report/([\w.-]+\.rst)", text))


def test_every_caption_exists():
    captions = _registered_captions()
    assert captions, "no output is registered with report()"
    missing = sorted(c for c in captions if not (REPO / "workflow" / "report" / c).exists())
    assert not missing, f"report() captions without a file in workflow/report/: {missing}"
    assert (REPO / "workflow" / "report" / "workflow.rst").exists()


def test_report_of_a_finished_run_holds_its_figures(tmp_path_factory):
    workdir = reference_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("report") / "report.html"
    run(workdir, "--nolock", "--report", str(out), *TARGETS)
    html = out.read_text(errors="replace")
    assert len(html) > 10_000
    figures = sorted(p.name for p in (workdir / "results").rglob("figures/*.png"))
    assert figures, "the run produced no figures"
    missing = [name for name in figures if name not in html]
    assert not missing, f"figures not in the report (wrap their outputs in report()): {missing}"
