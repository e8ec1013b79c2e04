"""``videopanda ask`` (JSON) and ``videopanda chat`` under a pseudo-terminal, on the reduced quickstart's model; ask
on a tiny random model for the quick tier."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from videopanda.data.decode import find_video_file
from videopanda.data.synth import QA_DIR
from videopanda.inference import model_template


@pytest.fixture(scope="module")
def held_out(quickstart_dir, precision):
    """(video path, question, the model's single-prompt answer in the suite's precision) of the first question."""
    from videopanda.inference import GenerationConfig, VideoPandaPredictor

    question = json.loads((quickstart_dir / "data" / QA_DIR / "test_q.json").read_text())[0]
    video = find_video_file(quickstart_dir / "data" / QA_DIR / "videos", question["video_name"])
    predictor = VideoPandaPredictor.from_pretrained(quickstart_dir / "model", GenerationConfig(max_new_tokens=6),
                                                    dtype=precision)
    return video, question["question"], predictor.ask(video, question["question"])


@pytest.mark.slow
def test_ask_prints_the_models_answer_as_json(quickstart_dir, held_out, precision):
    video, question, expected = held_out
    command = [sys.executable, "-m", "videopanda", "ask", "--model", str(quickstart_dir / "model"),
               "--video", str(video), "--max-new-tokens", "6", "--dtype", precision, "--json", question]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["question"] == question and reply["video"] == str(video)
    assert reply["answer"] == expected  # same model, template, precision and greedy decoding


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """Bytes from the pseudo-terminal until ``marker`` appears (or the child closes it)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.slow
def test_chat_answers_turn_after_turn_under_a_pseudo_terminal(quickstart_dir, held_out, precision):
    video, question, expected = held_out
    primary, secondary = pty.openpty()
    command = [sys.executable, "-m", "videopanda", "chat", "--model", str(quickstart_dir / "model"),
               "--video", str(video), "--max-new-tokens", "6", "--dtype", precision]
    child = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    try:
        assert b"you> " in _read_until(primary, b"you> ", timeout=240)
        os.write(primary, question.encode() + b"\n")
        first = _read_until(primary, b"you> ", timeout=240)
        assert f"videopanda> {expected}".encode() in first  # the first turn is the single-prompt answer
        os.write(primary, b"Is the object big or small?\n")
        second = _read_until(primary, b"you> ", timeout=240)
        assert b"videopanda> " in second
        os.write(primary, b"/quit\n")
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
        os.close(primary)


def test_model_template_reads_what_the_directory_records(tmp_path):
    assert model_template(tmp_path) == "vicuna_v1_eval"  # nothing recorded: the release's evaluation form
    (tmp_path / "train_config.yaml").write_text("data:\n  template: vicuna_v1\n")
    assert model_template(tmp_path) == "vicuna_v1_eval"  # an older directory: its training config
    (tmp_path / "train_config.yaml").write_text("data:\n  template: chat_template\n")
    assert model_template(tmp_path) == "chat_template"
    (tmp_path / "config.json").write_text('{"model_type": "videopanda", "prompt_template": "vicuna_v1_eval"}')
    assert model_template(tmp_path) == "vicuna_v1_eval"  # the model's config wins


def test_ask_on_a_tiny_model_prints_one_json_line(tiny_videopanda_dir, make_video, capsys, precision):
    """The quick tier's run of ``ask`` (in process, on the tiny random model): the whole path, any answer."""
    from videopanda.cli import main

    video = make_video("clip.mp4", height=112, width=112)
    assert main(["ask", "--model", str(tiny_videopanda_dir), "--video", str(video), "--max-new-tokens", "2",
                 "--dtype", precision, "--json", "What moves?"]) == 0
    reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reply["question"] == "What moves?" and reply["video"] == str(video) and isinstance(reply["answer"], str)
