"""`python -m videopanda.vllm.serve`'s command line and chat template, without vLLM (quick: no server starts)."""

from __future__ import annotations

import json

import pytest

from videopanda.data.conversation import Turn, get_template
from videopanda.model.configuration_videopanda import IMAGE_TOKEN
from videopanda.vllm.serve import parse_args, vicuna_chat_template, vllm_argv


@pytest.mark.parametrize("name", ["vicuna_v1_eval", "vicuna_v1"])
def test_vicuna_chat_template_renders_our_prompt(smollm2_tokenizer, name):
    template = get_template(name)
    turns = [Turn("user", f"{IMAGE_TOKEN}\nwhat is red?"), Turn("assistant", "a ball"), Turn("user", "and then?")]
    ours = "".join(s.text for s in template.segments(turns, smollm2_tokenizer, add_generation_prompt=True))
    rendered = smollm2_tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.text} for t in turns], chat_template=vicuna_chat_template(
            template, smollm2_tokenizer), tokenize=False, add_generation_prompt=True)
    assert rendered == ours  # SmolLM2's tokenizer adds no BOS: the texts are the same, so are the tokens
    assert smollm2_tokenizer(rendered, add_special_tokens=False)["input_ids"] == smollm2_tokenizer(
        ours, add_special_tokens=template.add_special_tokens)["input_ids"]


def test_vllm_argv_sets_our_loader_frames_and_template(tiny_videopanda_dir, tmp_path):
    args, extra = parse_args([str(tiny_videopanda_dir), "--port", "9001", "--allowed-local-media-path",
                              str(tmp_path), "--tensor-parallel-size", "2"])
    argv = vllm_argv(args, extra, tmp_path)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and argv[-2:] == ["--tensor-parallel-size", "2"]
    media = json.loads(argv[argv.index("--media-io-kwargs") + 1])
    assert media == {"video": {"video_backend": "videopanda", "num_frames": 8}}
    # the tiny model records no template: the release's Vicuna form, as a Jinja chat template
    assert argv[argv.index("--chat-template") + 1] == str(tmp_path / "vicuna.jinja")
    assert "--enforce-eager" in argv and argv[argv.index("--allowed-local-media-path") + 1] == str(tmp_path.resolve())
    assert argv[argv.index("--chat-template-content-format") + 1] == "string"  # our placeholder before the text
