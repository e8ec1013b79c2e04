"""`videopanda serve` as a real server on 127.0.0.1: SmolLM2 for the judge, a tiny Video-Panda with videos."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from conftest import moving_square_frames
from videopanda.data.video_writer import write_video
from videopanda.eval.judge.base import LLMJudge, QAItem
from videopanda.eval.judge.local_backend import LocalBackend
from videopanda.eval.judge.openai_backend import OpenAIBackend, OpenAIJudgeConfig
from videopanda.eval.judge.prompts import QA
from videopanda.eval.judge.runner import run_judge
from videopanda.eval.predict import ChatLLM
from videopanda.eval.serve import LLMChatModel, create_app, load_chat_model


def start_server(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def smollm2_chat():
    return ChatLLM.load("smollm2")


@pytest.fixture(scope="session")
def smollm2_server(smollm2_chat):
    server, thread, url = start_server(create_app(LLMChatModel(smollm2_chat), default_max_tokens=6))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def panda_server(tiny_videopanda_dir):
    chat_model = load_chat_model(str(tiny_videopanda_dir))
    server, thread, url = start_server(create_app(chat_model, default_max_tokens=3))
    yield url, chat_model
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_openai_judge_against_the_real_smollm2_server(smollm2_server, smollm2_chat, tmp_path):
    assert httpx.get(f"{smollm2_server}/models").json()["data"][0]["id"] == "smollm2"
    item = QAItem("1", "what colour is the ball?", "red", "The ball is red.")
    remote = LLMJudge(OpenAIBackend(OpenAIJudgeConfig(model="smollm2", base_url=smollm2_server, max_tokens=6,
                                                      timeout_s=300, max_attempts=1)), parse_attempts=1)
    results = run_judge([item], tmp_path, remote, QA, workers=1)
    verdict = (tmp_path / "verdicts.jsonl").read_text()
    # The server's greedy reply is what the same model gives in-process (the local backend).
    local_reply = LocalBackend(smollm2_chat, max_new_tokens=6).complete(*QA.render(item))
    assert local_reply and f'"raw": {__import__("json").dumps(local_reply)}' in verdict
    assert results["judged"] + results["failures"] == 1 and results["judge"]["backend"] == "openai"


@pytest.mark.slow
def test_plain_llm_server_refuses_a_video(smollm2_server):
    reply = httpx.post(f"{smollm2_server}/chat/completions", json={
        "model": "smollm2", "video": "/tmp/x.mp4", "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert reply.status_code == 400 and "takes no video" in reply.json()["detail"]


def test_videopanda_server_answers_about_a_video(panda_server, tmp_path):
    url, chat_model = panda_server
    video = write_video(tmp_path / "clip.mp4", moving_square_frames(12, 48, 64), fps=4.0)
    expected = chat_model.predictor.answer([chat_model.predictor.load_video(video)], ["What moves?"],
                                           max_new_tokens=3)[0]
    assert expected
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    response = client.chat.completions.create(model="tiny-panda", max_tokens=3, messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": video.as_uri()}}, {"type": "text", "text": "What moves?"}]}])
    assert response.choices[0].message.content == expected
    field = httpx.post(f"{url}/chat/completions", json={"video": str(video), "max_tokens": 3,
                                                         "messages": [{"role": "user", "content": "What moves?"}]})
    assert field.json()["choices"][0]["message"]["content"] == expected
    assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "tiny-panda"


def test_videopanda_server_reports_a_missing_video(panda_server, tmp_path):
    url, _ = panda_server
    reply = httpx.post(f"{url}/chat/completions", json={
        "video": str(tmp_path / "nope.mp4"), "messages": [{"role": "user", "content": "What moves?"}]})
    assert reply.status_code == 400 and "nope.mp4" in reply.json()["detail"]
