"""The manual: a README a newcomer reads in one sitting, and a documentation site that builds.

``mkdocs build --strict`` fails on a broken link or anchor between pages, a page missing from
the navigation's files, or an API reference whose object no longer exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 350  # what it does, install, the two commands, one-fact use, results, where to read on


def test_readme_stays_a_short_manual():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move reference material to docs/"


def test_readme_links_resolve():
    text = (REPO / "README.md").read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t}
    missing = sorted(t for t in targets if t and not (REPO / t).exists())
    assert not missing, f"README.md links to missing files: {missing}"


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_navigation():
    class Loader(yaml.SafeLoader):  # a subclass: the constructor below stays out of yaml's own
        pass

    # mkdocs.yml names a Python object (the mermaid fence formatter); read it as a plain string.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda _l, suffix, _n: suffix)
    conf = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert pages == set(_nav_pages(conf["nav"]))


def test_documentation_site_builds_strictly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("locedit.api.load", "locedit.api.trace", "locedit.api.edit", "locedit.registry.methods.Method"):
        assert f'id="{name}"' in api, f"the API reference lost {name}"
