"""SmolLM2's safetensors cache: built once, reused without parsing the GGUF, rebuilt when damaged, race-safe.

The cache's mechanics (key, marker, damage, two converters at once) run on a small stand-in file converted into
a tiny LLaMA; the real GGUF is parsed only where the conversion itself is checked (slow tests).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from conftest import tiny_llama_config
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


class CountingConverter:
    """Saves an already made model (and tokenizer) as the conversion, and counts its calls."""

    def __init__(self, model, tokenizer=None) -> None:
        self.model, self.tokenizer, self.calls = model, tokenizer, 0

    def __call__(self, source, out) -> None:
        self.calls += 1
        if self.tokenizer is None:
            self.model.save_pretrained(out)
        else:
            save_converted(self.model, self.tokenizer, out)


def refuse(*args, **kwargs):
    raise AssertionError("the GGUF was parsed although a valid cache exists")


def cache_entries(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture
def source(tmp_path):
    """A stand-in for the GGUF file: the cache only hashes it and hands it to the converter."""
    path = tmp_path / "Stand-In.Q4.gguf"
    path.write_bytes(b"GGUF stand-in " * 1000)
    return path


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config())


@pytest.fixture
def built(tmp_path, source, tiny_model):
    """(cache root, the converted directory) for ``source``."""
    root = tmp_path / "cache"
    converter = CountingConverter(tiny_model)
    path = cached_model_dir(source, root, convert=converter)
    assert converter.calls == 1
    return root, path


def test_converted_once_then_reused_and_keyed_by_the_checksum(built, source, tiny_model):
    root, path = built
    assert path.parent == root and gguf_sha256(source)[:16] in path.name
    assert is_complete(path, gguf_sha256(source)) and (path / CACHE_MARKER).is_file()
    assert cached_model_dir(source, root, convert=refuse) == path
    assert cache_entries(root) == [path.name]  # no temporary directory left behind
    reloaded = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert all(torch.equal(reloaded[name], weight) for name, weight in tiny_model.state_dict().items())
    source.write_bytes(b"another version")  # a new GGUF is another key, converted again
    converter = CountingConverter(tiny_model)
    assert cached_model_dir(source, root, convert=converter) != path and converter.calls == 1


def damage_truncate(path) -> None:
    weights = path / WEIGHTS_FILE
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)


def damage_header(path) -> None:  # same size, so only reading the safetensors header finds it
    with (path / WEIGHTS_FILE).open("r+b") as f:
        f.write(b"\xff" * 16)


def damage_missing_file(path) -> None:
    (path / "config.json").unlink()


def damage_no_marker(path) -> None:  # a conversion killed before it finished
    (path / CACHE_MARKER).unlink()


@pytest.mark.parametrize("damage", [damage_truncate, damage_header, damage_missing_file, damage_no_marker])
def test_a_damaged_cache_is_rebuilt(damage, built, source, tiny_model):
    root, path = built
    damage(path)
    assert not is_complete(path, gguf_sha256(source))
    converter = CountingConverter(tiny_model)
    assert cached_model_dir(source, root, convert=converter) == path and converter.calls == 1
    assert is_complete(path, gguf_sha256(source)) and cache_entries(root) == [path.name]
    AutoModelForCausalLM.from_pretrained(path)


CONVERTER_PROCESS = textwrap.dedent("""
    import shutil, sys, time
    from pathlib import Path
    from videopanda.model.smollm2_cache import CACHE_MARKER, cached_model_dir

    source, root, good, name, flags = (Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4],
                                       Path(sys.argv[5]))

    def convert(gguf, out):
        (flags / name).touch()  # converting; wait until the other process converts too
        deadline = time.monotonic() + 120
        while len(list(flags.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for file in good.iterdir():
            if file.name != CACHE_MARKER:
                shutil.copy(file, out / file.name)
        print("converted", flush=True)

    print(cached_model_dir(source, root, convert=convert))
""")


def test_two_concurrent_converters_end_with_one_valid_cache(built, source, tmp_path):
    good = built[1]
    root, flags = tmp_path / "shared", tmp_path / "flags"
    flags.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CONVERTER_PROCESS, str(source), str(root), str(good), name,
                               str(flags)], stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [proc.communicate(timeout=300)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert all(out[0] == "converted" for out in outputs)  # both converted at once ...
    assert outputs[0][1] == outputs[1][1] == str(root / good.name)  # ... and both use the one cache
    assert is_complete(root / good.name, gguf_sha256(source))
    assert cache_entries(root) == [good.name]  # the loser's temporary directory is gone
    AutoModelForCausalLM.from_pretrained(root / good.name)


@pytest.fixture(scope="module")
def parsed(smollm2_gguf):
    return parse_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory, smollm2_gguf, parsed):
    """A fresh cache dir into which SmolLM2 was converted."""
    root = tmp_path_factory.mktemp("smollm2_cache")
    converter = CountingConverter(*parsed)
    cached_model_dir(smollm2_gguf, root, convert=converter)
    assert converter.calls == 1
    return root


@pytest.mark.slow  # parses the GGUF (10-40 s)
def test_smollm2_loads_from_the_cache_without_parsing_the_gguf(smollm2_cache, monkeypatch):
    monkeypatch.setattr(gguf, "GGUFReader", refuse)  # transformers imports it from here when it parses a GGUF
    load_llm("smollm2", cache_dir=smollm2_cache)
    load_tokenizer("smollm2", cache_dir=smollm2_cache)


@pytest.mark.slow
def test_cached_smollm2_equals_the_gguf_parsed_one(smollm2_cache, parsed):
    gguf_model, gguf_tokenizer = parsed
    model, tokenizer = load_llm("smollm2", cache_dir=smollm2_cache), load_tokenizer("smollm2", cache_dir=smollm2_cache)
    messages = [{"role": "user", "content": "What moves in this video? A red square, left to right."}]
    text = gguf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    ids = gguf_tokenizer(text, return_tensors="pt").input_ids  # (1, L)
    assert tokenizer(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
    assert tokenizer.eos_token == gguf_tokenizer.eos_token and tokenizer.bos_token == gguf_tokenizer.bos_token
    with torch.no_grad():
        expected, got = gguf_model.eval()(ids).logits, model.eval()(ids).logits  # (1, L, V)
    assert torch.equal(got, expected)
