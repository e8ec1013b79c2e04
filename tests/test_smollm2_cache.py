"""SmolLM2's safetensors cache: built once, reused without parsing the GGUF, rebuilt when damaged, race-safe."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import gguf
import pytest
import torch

from videopanda.model.llm import load_llm, load_tokenizer
from videopanda.model.smollm2_cache import (
    CACHE_MARKER,
    WEIGHTS_FILE,
    cached_model_dir,
    gguf_sha256,
    is_complete,
    parse_gguf,
    save_converted,
)

pytestmark = pytest.mark.slow  # parses the GGUF once (10-40 s)


class CountingConverter:
    """A converter that saves an already parsed model (parsing is what the cache saves) and counts its calls."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer, self.calls = model, tokenizer, 0

    def __call__(self, source, out) -> None:
        self.calls += 1
        save_converted(self.model, self.tokenizer, out)


def refuse(*args, **kwargs):
    raise AssertionError("the GGUF was parsed although a valid cache exists")


@pytest.fixture(scope="module")
def parsed(smollm2_gguf):
    return parse_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def built(tmp_path_factory, smollm2_gguf, parsed):
    """A cache dir into which SmolLM2 was converted, and the converter's call count."""
    root = tmp_path_factory.mktemp("cache")
    converter = CountingConverter(*parsed)
    path = cached_model_dir(smollm2_gguf, root, convert=converter)
    return root, path, converter.calls


def test_built_once_then_reused_without_parsing_the_gguf(built, smollm2_gguf, monkeypatch):
    root, path, calls = built
    assert calls == 1 and path.parent == root and is_complete(path, gguf_sha256(smollm2_gguf))
    assert gguf_sha256(smollm2_gguf)[:16] in path.name  # keyed by the GGUF's checksum
    monkeypatch.setattr(gguf, "GGUFReader", refuse)  # transformers imports it from here when it parses a GGUF
    assert cached_model_dir(smollm2_gguf, root, convert=refuse) == path
    load_llm("smollm2", cache_dir=root)
    load_tokenizer("smollm2", cache_dir=root)


def test_cached_model_and_tokenizer_equal_the_gguf_parsed_ones(built, parsed):
    root = built[0]
    gguf_model, gguf_tokenizer = parsed
    model, tokenizer = load_llm("smollm2", cache_dir=root), load_tokenizer("smollm2", cache_dir=root)
    messages = [{"role": "user", "content": "What moves in this video? A red square, left to right."}]
    text = gguf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    ids = gguf_tokenizer(text, return_tensors="pt").input_ids  # (1, L)
    assert tokenizer(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
    assert tokenizer.eos_token == gguf_tokenizer.eos_token and tokenizer.bos_token == gguf_tokenizer.bos_token
    with torch.no_grad():
        expected, got = gguf_model.eval()(ids).logits, model.eval()(ids).logits  # (1, L, V)
    assert torch.equal(got, expected)


def damage_truncate(path) -> None:
    weights = path / WEIGHTS_FILE
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)


def damage_header(path) -> None:  # same size, so only reading the safetensors header finds it
    with (path / WEIGHTS_FILE).open("r+b") as f:
        f.write(b"\xff" * 16)


def damage_missing_file(path) -> None:
    (path / "tokenizer.json").unlink()


def damage_no_marker(path) -> None:  # a conversion killed before it finished
    (path / CACHE_MARKER).unlink()


@pytest.mark.parametrize("damage", [damage_truncate, damage_header, damage_missing_file, damage_no_marker])
def test_a_damaged_cache_is_rebuilt(damage, built, parsed, smollm2_gguf, tmp_path):
    good = built[1]
    shutil.copytree(good, tmp_path / good.name)
    damage(tmp_path / good.name)
    assert not is_complete(tmp_path / good.name, gguf_sha256(smollm2_gguf))
    converter = CountingConverter(*parsed)
    path = cached_model_dir(smollm2_gguf, tmp_path, convert=converter)
    assert converter.calls == 1 and path == tmp_path / good.name
    assert is_complete(path, gguf_sha256(smollm2_gguf))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [good.name]
    load_llm("smollm2", cache_dir=tmp_path)


CONVERTER_PROCESS = textwrap.dedent("""
    import shutil, sys, time
    from pathlib import Path
    from videopanda.model.smollm2_cache import cached_model_dir

    gguf, root, good, name, flags = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5])

    def convert(source, out):
        (flags / name).touch()  # converting; wait until the other process converts too
        deadline = time.monotonic() + 120
        while len(list(flags.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for file in good.iterdir():
            if file.name != "videopanda-cache.json":
                shutil.copy(file, out / file.name)
        print("converted", flush=True)

    print(cached_model_dir(gguf, root, convert=convert))
""")


def test_two_concurrent_converters_end_with_one_valid_cache(built, smollm2_gguf, tmp_path):
    good = built[1]
    root, flags = tmp_path / "cache", tmp_path / "flags"
    flags.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CONVERTER_PROCESS, str(smollm2_gguf), str(root), str(good),
                               name, str(flags)], stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [proc.communicate(timeout=300)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert all(out[0] == "converted" for out in outputs)  # both converted at once ...
    assert outputs[0][1] == outputs[1][1] == str(root / good.name)  # ... and both use the one cache
    assert is_complete(root / good.name, gguf_sha256(smollm2_gguf))
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [good.name]  # no temp left
    load_llm("smollm2", cache_dir=root)
