"""Every output registered with ``report()`` has its caption in workflow/report/ (the report of
a finished run, with every figure and table in it, is built in test_end_to_end.py)."""

from __future__ import annotations

import re

from tests.workflow.helpers import REPO


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
