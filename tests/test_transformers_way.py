"""The transformers way answers as ``videopanda ask``: AutoProcessor + AutoModelForCausalLM from a model
directory, the processor's ``apply_chat_template`` with a ``{"type": "video"}`` part, ``processor(text,
videos)``, ``generate`` and ``batch_decode``; on a converted release-layout checkpoint and on the quickstart
model, in the precision the suite runs in."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from conftest import moving_square_frames
from test_release import source_model, write_release  # noqa: F401  (source_model is a fixture)
from videopanda.cli import main
from videopanda.data.decode import read_video_frames
from videopanda.data.video_writer import write_video
from videopanda.runtime import resolve_precision

MAX_NEW_TOKENS = 6


def transformers_answer(model_dir, video, question: str, precision: str) -> str:
    processor = AutoProcessor.from_pretrained(model_dir)
    dtype = getattr(torch, resolve_precision(precision).dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    frames = read_video_frames(video, num_frames=processor.num_frames)  # (T, H, W, 3): the release's sampling
    inputs = processor(text=prompt, videos=[frames], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]  # generate returns the prompt, then the new tokens
    return processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()


def ask_answer(capsys, model_dir, video, question: str, precision: str) -> str:
    argv = ["ask", "--model", str(model_dir), "--video", str(video), "--max-new-tokens", str(MAX_NEW_TOKENS),
            "--dtype", precision, "--json", question]
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["answer"]


def test_converted_release_checkpoint(source_model, tmp_path, capsys, precision):  # noqa: F811
    release = write_release(tmp_path / "release", source_model, "safetensors")
    assert main(["convert", "--release", str(release), "--out", str(tmp_path / "ours")]) == 0
    answers = set()
    for seed in range(3):
        video = write_video(tmp_path / f"v{seed}.mp4", moving_square_frames(16, 64, 96, seed=seed), fps=8.0)
        theirs = transformers_answer(tmp_path / "ours", video, "what moves", precision)
        assert theirs == ask_answer(capsys, tmp_path / "ours", video, "what moves", precision)
        answers.add(theirs)
    assert all(answers)  # something was generated (a random model: the words need not differ per video)


@pytest.mark.slow  # the shared reduced quickstart
def test_quickstart_model(quickstart_dir, held_out, capsys, precision):
    for _, video, question in held_out[:3]:
        theirs = transformers_answer(quickstart_dir / "model", video, question, precision)
        assert theirs and theirs == ask_answer(capsys, quickstart_dir / "model", video, question, precision)
