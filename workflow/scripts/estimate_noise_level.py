"""Noise level σ of Causal Tracing: given in the config, or ROME's 3 × std of subject embeddings."""

from locedit.io import read_json, write_json
from locedit.modeling import load_model
from locedit.noise import subject_embedding_std
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    log = setup_logging(snakemake)
    given = snakemake.params.noise_std
    out = snakemake.output.noise
    if given is not None:
        write_json({"noise_std": float(given), "rule": "given"}, out)
        log.info("noise_std given in the config: %g", given)
        return
    records = read_json(snakemake.input.records)
    facts = [(r["requested_rewrite"]["prompt"], r["requested_rewrite"]["subject"]) for r in records]
    model, tok = load_model(**snakemake.params.model)
    std, n_tokens, missing = subject_embedding_std(model, tok, facts)
    mult = float(snakemake.params.multiplier)
    result = {
        "noise_std": mult * std,
        "rule": "3x_subject_embedding_std",
        "multiplier": mult,
        "embedding_std": std,
        "n_facts": len(facts) - len(missing),
        "n_subject_tokens": n_tokens,
        "subject_not_found_case_ids": [int(records[i]["case_id"]) for i in missing],
    }
    write_json(result, out)
    log.info("noise_std = %g x %g = %g over %d subject tokens", mult, std, mult * std, n_tokens)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
