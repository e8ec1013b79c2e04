"""Same model + same input + same precision = same answer, through every inference entry point.

The reduced quickstart's SmolLM2-based model answers its held-out questions
through the quickstart's own evaluation (batched), ``eval run`` (batch 1 and
batched), ``ask``, ``chat`` and ``serve``, each with its default template and
the precision the suite runs in (``pytest --precision float32|bfloat16``;
default ``auto``). Single-prompt paths must agree exactly; batched ones up to
near-ties of the logits (``conftest.assert_same_greedy_answer``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import openai
import pytest

from conftest import assert_same_greedy_answer
from videopanda.cli import main
from videopanda.data.synth import QA_DIR
from videopanda.eval.jsonl import read_jsonl
from videopanda.inference import GenerationConfig, VideoPandaPredictor

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def predictor(quickstart_dir, precision):
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    return VideoPandaPredictor.from_pretrained(quickstart_dir / "model", config, dtype=precision)


@pytest.fixture(scope="module")
def alone(predictor, held_out):
    """The reference: each question alone through the predictor."""
    return {qid: predictor.ask(video, question) for qid, video, question in held_out}


def test_the_precision_asked_for_is_the_one_every_path_used(quickstart_dir, predictor, precision):
    recorded = json.loads((quickstart_dir / "results.json").read_text())["precision"]
    assert recorded["requested"] == precision and recorded["dtype"] == predictor.precision.dtype
    assert predictor.template == "chat_template"  # the quickstart model records its template


def test_quickstart_evaluation_matches_single_prompt_answers(quickstart_dir, predictor, held_out):
    evaluated = {str(r["id"]): r["pred"] for r in read_jsonl(quickstart_dir / "eval" / "finetune" / "merge.jsonl")}
    assert set(evaluated) == {qid for qid, _, _ in held_out}
    for qid, video, question in held_out:  # batched (eval_batch_size 16): equal up to near-ties
        assert_same_greedy_answer(predictor, predictor.load_video(video), question, evaluated[qid])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_eval_run_matches_single_prompt_answers(quickstart_dir, predictor, held_out, alone, precision, batch_size,
                                                tmp_path):
    qa = quickstart_dir / "data" / QA_DIR
    argv = ["eval", "run", str(quickstart_dir / "model"), "--questions", str(qa / "test_q.json"),
            "--answers", str(qa / "test_a.json"), "--video-dir", str(qa / "videos"), "--output-dir", str(tmp_path),
            "--batch-size", str(batch_size), "--max-new-tokens", str(MAX_NEW_TOKENS), "--dtype", precision]
    assert main(argv) == 0
    preds = {str(r["id"]): r["pred"] for r in read_jsonl(tmp_path / "merge.jsonl")}
    settings = json.loads((tmp_path / "run_settings.json").read_text())
    assert settings["precision"]["dtype"] == predictor.precision.dtype and settings["template"] == "chat_template"
    for qid, video, question in held_out:
        if batch_size == 1:
            assert preds[qid] == alone[qid]  # the same computation
        else:
            assert_same_greedy_answer(predictor, predictor.load_video(video), question, preds[qid])


def test_ask_and_chat_match_single_prompt_answers(quickstart_dir, held_out, alone, precision):
    from videopanda.cli.chat import chat_loop

    qid, video, question = held_out[0]
    command = [sys.executable, "-m", "videopanda", "ask", "--model", str(quickstart_dir / "model"), "--video",
               str(video), "--max-new-tokens", str(MAX_NEW_TOKENS), "--dtype", precision, "--json", question]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1])["answer"] == alone[qid]

    chat_predictor = VideoPandaPredictor.from_pretrained(
        quickstart_dir / "model", GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=1), dtype=precision)
    lines = [question]

    def read(prompt: str) -> str:
        if not lines:
            raise EOFError  # end of input leaves the chat, as Ctrl-D does
        return lines.pop(0)

    class Screen:
        text = ""

        def write(self, s: str) -> None:
            Screen.text += s

        def flush(self) -> None:
            pass

    assert chat_loop(chat_predictor, video, read=read, out=Screen()) == 1
    assert f"videopanda> {alone[qid]}\n" in Screen.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_matches_single_prompt_answers(quickstart_dir, held_out, alone, precision):
    port = _free_port()
    command = [sys.executable, "-m", "videopanda", "serve", str(quickstart_dir / "model"), "--port", str(port),
               "--dtype", precision, "--media-root", str(quickstart_dir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY", max_retries=0)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.5)
        for qid, video, question in held_out[:2]:
            reply = client.chat.completions.create(
                model="model", max_tokens=MAX_NEW_TOKENS, temperature=0,
                messages=[{"role": "user", "content": [
                    {"type": "video_url", "video_url": {"url": video.resolve().as_uri()}},
                    {"type": "text", "text": question}]}])
            assert reply.choices[0].message.content == alone[qid]
    finally:
        server.terminate()
        server.wait(timeout=30)
