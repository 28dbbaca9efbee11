"""Running the workflow through Snakemake itself, in a scratch directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def reduced_config() -> dict:
    """The reduced default config used by the workflow tests (.test/config.yaml)."""
    return yaml.safe_load((REPO / ".test" / "config.yaml").read_text())


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, check: bool = True,
              timeout: int = 1200) -> subprocess.CompletedProcess:
    """``snakemake -s REPO/Snakefile -d workdir ...``; output captured, raised on failure."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(args)
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def reverse_mappings(value):
    """``value`` with every mapping's keys in reverse order, recursively (lists keep theirs):
    the same config as another tool (or ``yaml.safe_dump``) might order it."""
    if isinstance(value, dict):
        return {k: reverse_mappings(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reverse_mappings(v) for v in value]
    return value
