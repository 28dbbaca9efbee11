"""The numbers the README reports about a finished run, read from its outputs.

Per rule: jobs and seconds summed over jobs (Snakemake's ``benchmarks/`` tables); for the edit
jobs also edits per second of job time and what a job pays besides editing and evaluating
(start-up: imports, model and statistics loading); facts known; mean rewrite score per method,
problem and edit layer (markdown, layers 1-indexed); where window-5 MLP tracing peaks; the
analysis summary::

    python benchmarks/run_summary.py                          # the run in this directory
    python benchmarks/run_summary.py --root /path/to/clone
    python benchmarks/run_summary.py --root CLONE --write README.md docs/*.md

``--write`` replaces every block between ``<!-- run_summary:NAME -->`` and
``<!-- /run_summary:NAME -->`` in the given Markdown files (the README and the documentation
pages) with the same numbers, so their result tables all come from one run (wall time from the
run's Snakemake log). A block may appear in several files; a block that no file has is named.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from locedit.api import toy_dir
from locedit.registry.methods import METHODS
from locedit.registry.rules import EDIT_RULES
from locedit.registry.variants import VARIANTS
from locedit.analysis.tables import SUMMARY_TABLE as SUMMARY
from locedit.analysis.verdict import localizer_label, verdict

#: README stage rows: (label, rules); rules without a benchmark table are left out.
STAGES = [
    ("toy model", ["train_toy_model"]),
    ("model import (GGUF)", ["download_model", "import_gguf_model"]),
    ("known-fact filter", ["filter_known_facts"]),
    ("causal tracing", ["estimate_noise_level", "trace_facts"]),
    ("editing prerequisites", ["sample_stats_corpus", "compute_layer_stats", "generate_context_templates",
                               "sample_essence_texts", "prepare_edit_inputs"]),
    ("tuning stage", ["tune_hparams", "collect_tuning"]),
    ("editing", list(EDIT_RULES)),
    ("regressions", ["fit_regressions"]),
]  # fmt: skip
METHOD_ORDER = list(METHODS)
VARIANT_ORDER = list(VARIANTS)


def rule_seconds(root: Path) -> pd.DataFrame:
    rows = []
    for f in (root / "benchmarks").glob("*/**/*.tsv"):
        table = pd.read_csv(f, sep="\t")
        rows.append({"rule": f.relative_to(root / "benchmarks").parts[0], "s": float(table["s"].iloc[-1])})
    return pd.DataFrame(rows).groupby("rule")["s"].agg(jobs="count", seconds="sum")


def wall_time(root: Path) -> tuple[float, int] | None:
    """(seconds from the first to the last job timestamp, jobs) of the newest Snakemake log."""
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    text = logs[-1].read_text()
    stamps = [datetime.strptime(s, "%a %b %d %H:%M:%S %Y") for s in re.findall(r"^\[(.+?)\]$", text, re.MULTILINE)]
    done = re.findall(r"^(\d+) of (\d+) steps", text, re.MULTILINE)
    if not stamps or not done:
        return None
    return (max(stamps) - min(stamps)).total_seconds(), int(done[-1][1])


def blocks(root: Path, res: Path, configs: list[Path] | None = None) -> dict[str, str]:
    """The README blocks, markdown."""
    rules = rule_seconds(root)
    edits = pd.read_parquet(res / "edits.parquet")
    facts = pd.read_parquet(res / "facts.parquet")
    out = {}
    wall = wall_time(root)
    if wall is not None:
        m, s = divmod(round(wall[0]), 60)
        out["wall"] = f"**{m} min {s} s wall** for all {wall[1]} jobs"
    metrics_path = toy_dir(root / "config.yaml") / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    traced = pd.read_parquet(res / "tracing.parquet")["case_id"].nunique() if (res / "tracing.parquet").exists() else 0
    details = {
        "toy model": f" ({metrics['train_seconds']:.0f} s of training on {metrics['threads']} threads)" if metrics else "",
        "causal tracing": f" ({traced} facts)",
        "editing": f" ({len(edits):,} edits)",
    }
    rows = ["| stage | rules (jobs) | seconds |", "|---|---|---|"]
    for label, names in STAGES:
        present = [r for r in names if r in rules.index]
        if present:
            jobs = ", ".join(f"`{r}` ({int(rules.loc[r, 'jobs'])})" for r in present)
            rows.append(f"| {label}{details.get(label, '')} | {jobs} | {rules.loc[present, 'seconds'].sum():,.0f} |")
    out["stages"] = "\n".join(rows)
    per_method = edits.groupby("method")["edit_seconds"].sum()
    order = [m for m in METHOD_ORDER if m in per_method.index]
    edit_rules = [r for r in EDIT_RULES if r in rules.index]
    job_s, n_jobs = float(rules.loc[edit_rules, "seconds"].sum()), int(rules.loc[edit_rules, "jobs"].sum())
    work = float(edits["edit_seconds"].sum() + edits["eval_seconds"].sum())
    out["edit_time"] = (
        "Of the edit jobs' time, the edits themselves (`edit_seconds` in `edits.parquet`) take "
        + ", ".join(f"{METHODS[m].label} {per_method[m]:.0f} s" for m in order)
        + f"; evaluation {edits['eval_seconds'].sum():.0f} s; the rest, {(job_s - work) / n_jobs:.1f} s per "
        f"job, is start-up (imports and model loading): {len(edits) / job_s:.2f} edits per job-second. "
        f"The run gives {len(facts)} records, {int(facts['is_correct'].sum())} of which the model "
        f"knows ({100 * facts['is_correct'].mean():.1f} %), and {len(edits):,} edits."
    )
    out["edit_rate"] = edit_rate_block(root, edits)
    noise = res / "tracing" / "noise.json"
    if noise.exists():
        out["noise"] = f"{json.loads(noise.read_text())['noise_std']:.3f}"
    table = edits.pivot_table(index=["method", "variant"], columns="layer", values="rewrite_score", sort=False)
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    table = table.reindex([i for m in order for i in sorted(
        (i for i in table.index if i[0] == m), key=lambda i: rank.get(i[1], 99))])
    table.columns = [f"layer {c + 1}" for c in table.columns]
    table = table.round(3).reset_index().rename(columns={"variant": "problem"})
    out["rewrite"] = table.to_markdown(index=False, tablefmt="github", floatfmt=".3f")
    summary = res / "analysis" / "tables" / f"{SUMMARY}.md"
    if summary.exists():
        out[SUMMARY] = summary.read_text().strip()
    out.update(tracing_blocks(res))
    reg_path = res / "regression.csv"
    if reg_path.exists():
        out["regression"] = regression_block(pd.read_csv(reg_path))
    joined = res / "edit_vs_trace.parquet"
    if reg_path.exists() and joined.exists():
        out["verdict"] = verdict_block(configs or [root / "config.yaml"], res, pd.read_csv(reg_path),
                                       pd.read_parquet(joined))
    return out


def verdict_block(configs: list[Path], res: Path, reg: pd.DataFrame, joined: pd.DataFrame) -> str:
    """The analysis's verdict paragraph (as the summary table opens with it) for this run; the
    run's config files, later ones over earlier ones, give its analysis settings."""
    import yaml

    analysis: dict = {}
    for path in configs:
        analysis.update((yaml.safe_load(path.read_text()) or {}).get("analysis", {}))
    return verdict(reg, joined, analysis["alpha"], res.parent.name,
                   localizer_label(analysis["trace_kind"], analysis["window"]))


def edit_rate_block(root: Path, edits: pd.DataFrame) -> str:
    """Edits per second of edit-job time (start-up included), with and without r-ROME's replay
    jobs (their edits cost no optimisation)."""
    seconds: dict[str, float] = {}
    for rule in EDIT_RULES:
        # benchmarks/{rule}/{model}/{dataset}/{variant}/{method}/{layer}/{shard}.tsv
        for f in (root / "benchmarks" / rule).glob("*/*/*/*/*/*.tsv"):
            method = f.relative_to(root / "benchmarks" / rule).parts[3]
            seconds[method] = seconds.get(method, 0.0) + float(pd.read_csv(f, sep="\t")["s"].iloc[-1])
    total = sum(seconds.values())
    paper = [m for m in seconds if not METHODS[m].reuses]
    n_paper = int(edits["method"].isin(paper).sum())
    s_paper = sum(seconds[m] for m in paper)
    return (f"**{len(edits) / total:.2f} edits per job-second** ({len(edits):,} edits in {total:,.0f} "
            f"job-seconds); without replay jobs ({', '.join(m for m in seconds if m not in paper)}), "
            f"{n_paper / s_paper:.2f} ({n_paper:,} edits in {s_paper:,.0f} job-seconds)")


def regression_block(reg: pd.DataFrame) -> str:
    """Per (problem, method): the paper's rewrite regression (Layer R², Diff R²: the R² tracing
    adds) with the paper's F-test and the fact-aware tests (wild cluster bootstrap, permutation)."""
    r = reg[reg["metric"] == "rewrite"] if "metric" in reg.columns else reg
    cols = {"r2_layer": "Layer R²", "r2_diff": "Diff R²", "f_pvalue": "F-test p",
            "wald_pvalue_wild": "wild bootstrap p", "perm_pvalue": "permutation p", "n_cases": "facts"}
    keep = [c for c in cols if c in r.columns]
    t = r[["variant", "method", *keep]].rename(columns={"variant": "problem", **cols})
    t["method"] = t["method"].map(lambda m: METHODS[m].label if m in METHODS else m)
    return t.to_markdown(index=False, tablefmt="github", floatfmt=".3g")


def tracing_blocks(res: Path) -> dict[str, str]:
    """Where tracing peaks (the peak run's layer histogram) and the averaged picture (mean
    indirect effect by ROME's token group at its strongest layers), layers 1-indexed."""
    from locedit.tracing.plots import TOKEN_GROUPS

    out = {}
    avg_path = res / "tracing" / "average_effects.parquet"
    if avg_path.exists():
        avg = pd.read_parquet(avg_path)
        rows = []
        for (kind, window), g in avg.groupby(["kind", "window"]):
            mat = g.pivot(index="group", columns="layer", values="effect")
            mat = mat.reindex([t for t in TOKEN_GROUPS if t in mat.index])
            for group, curve in mat.iterrows():
                top = curve.nlargest(3)
                rows.append(f"| {kind}, window {window} | {group} | {curve.max():.3f} | "
                            + ", ".join(str(int(l) + 1) for l in top.index) + " |")
        out["average"] = "\n".join(["| run | token group | largest mean effect | its 3 largest layers |",
                                    "|---|---|---|---|", *rows])
    traced = res / "tracing.parquet"
    if traced.exists():
        t = pd.read_parquet(traced)
        t = t[t["status"] == "ok"]
        kind, window = t["kind"].iloc[0], int(t["window"].iloc[0])
        parts = []
        for label, col in (("any token", "effect_frac_max"), ("last subject token", "effect_frac_last")):
            sel = t[(t["kind"] == kind) & (t["window"] == window)].dropna(subset=[col])
            peaks = sel.loc[sel.groupby("case_id")[col].idxmax(), "layer"] + 1
            counts = peaks.value_counts().sort_index()
            parts.append(f"at {label}: median {peaks.median():.0f}, quartiles {peaks.quantile(0.25):.0f}–"
                         f"{peaks.quantile(0.75):.0f} (" + ", ".join(f"layer {int(l)}: {int(n)}" for l, n in counts.items()) + ")")
        out["peaks"] = f"{kind} window {window}, {t['case_id'].nunique()} facts; peak layer (1-indexed) " + "; ".join(parts)
    return out


def write_blocks(path: Path, new: dict[str, str]) -> list[str]:
    """Replace the marked blocks of one Markdown file; returns the names replaced."""
    text, done = path.read_text(), []
    for name, body in new.items():
        pattern = re.compile(rf"(<!-- run_summary:{name} -->)(.*?)(<!-- /run_summary:{name} -->)", re.DOTALL)
        inline = bool(pattern.search(text)) and "\n" not in pattern.search(text).group(2)
        sep = "" if inline else "\n"
        text, n = pattern.subn(lambda m, s=sep, b=body: f"{m.group(1)}{s}{b}{s}{m.group(3)}", text)
        if n:
            done.append(name)
    path.write_text(text)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--results", default="results/toy/synthetic")
    ap.add_argument("--write", type=Path, nargs="+", default=None, help="Markdown files whose run_summary blocks to rewrite")
    ap.add_argument("--prefix", default="", help="block name prefix (real_ for the real-model run's blocks)")
    ap.add_argument("--config", type=Path, nargs="+", default=None,
                    help="the run's config files (default: ROOT/config.yaml)")
    ap.add_argument("--only", nargs="+", default=None, help="write only these blocks (names without prefix)")
    args = ap.parse_args()
    res = args.root / args.results
    new = {args.prefix + k: v for k, v in blocks(args.root, res, args.config).items() if args.only is None or k in args.only}
    if args.write is not None:
        done: set[str] = set()
        for path in args.write:
            names = write_blocks(path, new)
            done.update(names)
            if names:
                print(f"{path}: rewrote", ", ".join(names))
        if missing := sorted(set(new) - done):
            print("blocks no file has:", ", ".join(missing))
        return
    print("## seconds per rule (summed over jobs)\n")
    print(rule_seconds(args.root).round(1).to_markdown())
    for name, body in new.items():
        print(f"\n## {name}\n\n{body}")
    here = Path(__file__).resolve().parent
    print()
    if "toy" in str(args.results):
        subprocess.run([sys.executable, str(here / "toy_localisation.py"), str(res)], check=True)


if __name__ == "__main__":
    main()
