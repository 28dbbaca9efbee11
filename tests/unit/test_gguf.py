"""GGUF sources: what planning reads from a file's header and the one-line errors for files it
cannot use (not GGUF, cut short, an architecture transformers or the adapters cannot read, no
language-model weights); the content-keyed import directory."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from locedit.gguf import PACKAGED, gguf_shape, import_dir, is_gguf_source
from locedit.validation import planned_model_shape, source_kind


def _write(path, arch="llama", tensors=("token_embd.weight",), block_count=2, ctx=64):
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    if block_count is not None:
        w.add_block_count(block_count)
    w.add_context_length(ctx)
    for name in tensors:
        w.add_tensor(name, np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_header_gives_the_shape(tmp_path):
    path = _write(tmp_path / "m.gguf", block_count=3, ctx=128)
    assert gguf_shape(path) == (("LlamaForCausalLM", 3, 128), [])
    assert source_kind(str(path)) == "gguf"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello world"), "is not a GGUF file (starts with b'hell'"),
        (lambda p: p.write_bytes(_write(p).read_bytes()[:40]), "corrupt or truncated GGUF file"),
        (lambda p: _write(p, arch="bert"), "GGUF architecture 'bert' is not supported"),
        (lambda p: _write(p, tensors=("blk.0.attn_q.weight",)), "not a language model"),
        (lambda p: _write(p, block_count=None), "GGUF metadata lacks 'llama.block_count'"),
    ],
    ids=["not-gguf", "truncated", "architecture", "no-embedding", "no-depth"],
)
def test_unusable_files_are_one_line_errors_naming_the_key(tmp_path, make, message):
    path = tmp_path / "bad.gguf"
    make(path)
    shape, problems = gguf_shape(path)
    assert shape is None and len(problems) == 1
    assert problems[0].startswith("model.source: ") and message in problems[0]
    assert "\n" not in problems[0]


def test_planning_names_a_missing_file_and_knows_packaged_models_before_their_download(tmp_path):
    config = {"model": {"source": str(tmp_path / "nope.gguf")}}
    shape, problems = planned_model_shape(config)
    assert shape is None and problems[0].startswith("model.source: no such GGUF file")
    shape, problems = planned_model_shape({"model": {"source": "smollm2-135m"}})
    assert problems == [] and (shape.architecture, shape.n_layers) == ("LlamaForCausalLM", 30)
    assert is_gguf_source("smollm2-135m") and is_gguf_source("x/y.GGUF")
    assert not is_gguf_source("EleutherAI/gpt-j-6B")


def test_the_import_directory_is_keyed_by_content(tmp_path):
    a = _write(tmp_path / "a" / "m.gguf", block_count=2)
    b = _write(tmp_path / "b" / "m.gguf", block_count=3)
    assert import_dir(str(a)) != import_dir(str(b))  # same name, other content
    same = tmp_path / "c.gguf"
    same.write_bytes(a.read_bytes())
    assert import_dir(str(same)).split("-")[-1] == import_dir(str(a)).split("-")[-1]
    p = PACKAGED["smollm2-135m"]
    assert import_dir("smollm2-135m") == f"resources/models/{p.stem}-{p.sha256[:12]}"
