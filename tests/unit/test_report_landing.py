"""The report's landing page carries the run's verdict once the run has one."""

from __future__ import annotations

from locedit.planning import report_landing_page


def test_landing_page_opens_with_the_verdict_when_the_run_has_one(tmp_path):
    template = tmp_path / "workflow.rst"
    template.write_text("**locedit** reproduces Hase et al.\n")
    summary = tmp_path / "summary.md"
    out = tmp_path / "landing" / "page.rst"
    # before the run: the template itself, nothing written
    assert report_landing_page(template, summary, out) == str(template) and not out.exists()
    summary.write_text("### Summary of this run\n\nDoes localization inform editing on toy? Barely. "
                       "R² 0.437.\n\n| Quantity | This run |\n|---|---|\n")
    page = report_landing_page(template, summary, out)
    text = out.read_text()
    assert page == str(out.resolve())
    assert text.index("Does localization inform editing on toy? Barely. R² 0.437.") < text.index("**locedit**")
    stamp = out.stat().st_mtime_ns
    report_landing_page(template, summary, out)  # unchanged text: not rewritten
    assert out.stat().st_mtime_ns == stamp
    summary.write_text("### Summary of this run\n\n| Quantity | This run |\n")  # no verdict: template
    assert report_landing_page(template, summary, out) == str(template)
