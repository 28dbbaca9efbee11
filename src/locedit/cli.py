"""The ``locedit`` command: trace or edit one fact without the workflow (:mod:`locedit.api`).

    locedit trace --model smollm2-135m --prompt "{} is located in the country of" \\
        --subject Trento --target Italy
    locedit edit --model smollm2-135m --method rome --layer 5 --prompt "..." --subject "..." \\
        --target-new Egypt --target-true Italy

Layers are 0-indexed, as in the config (figures label them 1-indexed, as the paper does).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import click
import yaml

from locedit.registry.kinds import TRACE_KINDS
from locedit.registry.methods import METHODS
from locedit.registry.variants import ERROR_INJECTION, VARIANTS


def _model_options(fn):
    fn = click.option("--dtype", default="float32", show_default=True,
                      type=click.Choice(["float32", "float16", "bfloat16"]))(fn)
    fn = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N")(fn)
    return click.option("--model", "model", default="toy", show_default=True,
                        help="A hub id, a save_pretrained directory, a .gguf file, a packaged GGUF model "
                        "(smollm2-135m), or toy (the toy of ./config.yaml, resources/models/toy-<key>).")(fn)


def _bad(flag: str, message: str) -> click.ClickException:
    """A mistake on the command line: one line naming the flag (click prints ``Error: ...``)."""
    return click.ClickException(f"{flag}: {message}")


def _model_shape(model: str):
    """The shape of ``--model`` from its config or GGUF header, before any weights load."""
    from locedit.gguf import PACKAGED
    from locedit.provenance import toy_dir_of_file
    from locedit.validation import fetched_model_shape, gguf_model_shape, shape_from_file, source_kind

    kind = source_kind(model)
    if kind == "toy":
        config = toy_dir_of_file("config.yaml") / "config.json"
        if not config.is_file():
            raise _bad("--model", f"no toy model at {config.parent}: build it with "
                       "`snakemake --cores 2 train_toy_model` in the repository")
        shape, problems = shape_from_file(config)
    elif kind == "missing":
        raise _bad("--model", f"{model!r} is neither a directory, a .gguf file, a packaged model "
                   f"({', '.join(PACKAGED)}) nor a hub id")
    elif kind == "gguf":
        shape, problems = gguf_model_shape(model)
    else:
        shape, problems = fetched_model_shape(model)
    if problems:
        raise _bad("--model", "; ".join(p.removeprefix("model.source: ") for p in problems))
    return shape


def _check_request(prompt: str, targets: dict[str, str]) -> None:
    if prompt.count("{}") != 1:
        raise _bad("--prompt", f"{prompt!r} needs exactly one {{}} where the subject goes")
    for flag, value in targets.items():
        if not value.strip():
            raise _bad(flag, "empty")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="locedit")
def main() -> None:
    """Does localization inform editing? Trace or edit one fact (the workflow: snakemake)."""


@main.command()
@_model_options
@click.option("--prompt", required=True, help='Template with {} for the subject.')
@click.option("--subject", required=True)
@click.option("--target", required=True, help="The answer whose probability is traced.")
@click.option("--kind", default="mlp", show_default=True,
              type=click.Choice([k for k in TRACE_KINDS if k != "zero"]),
              help="restoration (mlp, attn, hidden), with other settings (mlp_str, mlp_noising, "
                   "mlp_logit_diff, ...), or an attribution-patching estimate (atp*)")
@click.option("--partner", default=None,
              help="For a kind that replaces the subject (*_str*): the subject put in its place.")
@click.option("--contrast", default=None,
              help="For a *_logit_diff kind under noise: the other answer (e.g. the new object).")
@click.option("--window", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--samples", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--noise-std", type=float, default=None, help="Default: 3 x the subject embeddings' std.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Heatmap file (.png/.pdf); default trace_<subject>.png here.")
def trace(model, device, dtype, prompt, subject, target, kind, partner, contrast, window, samples, noise_std,
          seed, out):
    """Causal Tracing of one prompt: print whether the model knows the fact, p_clean, p_noised and
    the peak; draw the heatmap."""
    _check_request(prompt, {"--target": target})
    if TRACE_KINDS[kind].corruption == "str" and not partner:
        raise _bad("--partner", f"--kind {kind} replaces the subject: name the subject put in its place")
    _model_shape(model)
    from locedit import api  # torch and transformers: after the checks
    from locedit.tracing.corruption import PartnerError

    lm = api.load(model, device=device, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.UnknownFactWarning)  # said below, in one line
        try:
            res = api.trace(lm, prompt, subject, target, kind=kind, window=window, samples=samples,
                            noise_std=noise_std, seed=seed, partner=partner, contrast=contrast)
        except PartnerError as err:
            raise _bad("--partner", str(err)) from None
    _echo_known(res.known, target)
    out = out or Path(f"trace_{re.sub(r'[^A-Za-z0-9]+', '_', subject).strip('_')}.png")
    api.plot_trace(res, out)
    tok, layer, p = api.peak(res)
    click.echo(f"p_clean {res.p_clean:.4g}  p_noised {res.p_noised:.4g}  (noise std {res.noise_std:.3g})")
    click.echo(f"peak: token {tok} {res.tokens[tok]!r}, layer {layer} (1-indexed {layer + 1}), p {p:.4g}")
    click.echo(f"heatmap: {out}")


def _echo_known(known: dict, target: str) -> None:
    """Whether the model knows the fact (the study's criterion), and a warning when it does not."""
    click.echo(f"known: {'yes' if known['known'] else 'no'}  (p({target}) {known['p_target']:.4g}, "
               f"rank {known['rank']}; greedy continuation {known['continuation'][:60]!r})")
    if not known["known"]:
        click.echo("warning: the model does not know this fact; the study traces known facts "
                   "only, and a trace of an unknown fact says little about where facts are stored",
                   err=True)


def _parse_hparam(ctx, param, values) -> dict:
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise _bad("--hparam", f"{item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(raw)
    return out


@main.command()
@_model_options
@click.option("--method", required=True, type=click.Choice(list(METHODS)))
@click.option("--layer", required=True, type=click.IntRange(min=0), help="Central edit layer, 0-indexed.")
@click.option("--prompt", required=True)
@click.option("--subject", required=True)
@click.option("--target-new", required=True)
@click.option("--target-true", required=True)
@click.option("--variant", default=ERROR_INJECTION.name, show_default=True,
              type=click.Choice(list(VARIANTS)))
@click.option("--paraphrase", "paraphrases", multiple=True, help="Repeatable.")
@click.option("--neighborhood", "neighborhood", multiple=True, help="Repeatable.")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Take the method's hyperparameters from a workflow config (editing.methods).")
@click.option("--hparam", "hparams", multiple=True, callback=_parse_hparam,
              help="KEY=VALUE override, repeatable (e.g. v_num_grad_steps=30).")
@click.option("--stats-corpus", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ROME/MEMIT statistics corpus (one document per line); the toy finds its own.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the row as JSON.")
def edit(model, device, dtype, method, layer, prompt, subject, target_new, target_true, variant,
         paraphrases, neighborhood, config, hparams, stats_corpus, seed, as_json):
    """Edit one fact, evaluate it and print the workflow's metrics row (weights restored)."""
    from locedit.registry.methods import config_hparams, get_method

    _check_request(prompt, {"--target-new": target_new, "--target-true": target_true})
    hp = {**(config_hparams(method, variant, config) if config else {}), **hparams}
    spec = get_method(method)
    try:
        spec.resolve(hp)
    except ValueError as err:
        where = f"editing.methods.{spec.config_section}"
        raise _bad("--hparam", str(err).replace(where, f"{method} hyperparameter")) from None
    shape = _model_shape(model)
    if shape is not None and layer >= shape.n_layers:
        raise _bad("--layer", f"{layer} is outside the model's {shape.n_layers} layers "
                   f"(0-{shape.n_layers - 1}, 0-indexed)")
    from locedit import api  # torch and transformers: after the checks

    lm = api.load(model, device=device, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.UnknownFactWarning)  # said below, in one line
        row = api.edit(lm, method, layer, prompt, subject, target_new=target_new,
                       target_true=target_true, paraphrases=paraphrases, neighborhood=neighborhood,
                       variant=variant, hparams=hp, stats_corpus=stats_corpus, seed=seed)
    if not row["known"]:
        click.echo(f"warning: the model does not know this fact ({target_true!r} is not in its "
                   "greedy continuation); the study edits known facts only", err=True)
    if as_json:
        click.echo(json.dumps(row, default=str))
    else:
        width = max(map(len, row))
        for key, value in row.items():
            click.echo(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
