"""`videopanda serve` as a real server on 127.0.0.1, driven by the official openai SDK and plain HTTP.

The served model is a tiny random Video-Panda whose answers follow its frames
(``serve_support.frames_sensitive_model``); every expected answer is the
in-process predictor's own for the same input, so a test fails if the server
drops, resamples or mangles what the request sent.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import openai
import pytest

from conftest import moving_square_frames
from serve_support import StaticFiles, frames_sensitive_model, free_port, png_data_url, start_cli_server, start_uvicorn
from videopanda.data.video_writer import write_video
from videopanda.inference import GenerationConfig, GenerationRequest, VideoPandaPredictor, cut_at_stops
from videopanda.serve import MediaPolicy, ServeConfig, create_app, load_served_model
from videopanda.serve.batching import DynamicBatcher

KEY = "test-key"
QUESTION = "What moves?"
RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(scope="module")
def panda_dir(tiny_videopanda_dir, tmp_path_factory):
    return frames_sensitive_model(tiny_videopanda_dir, tmp_path_factory.mktemp("served") / "panda")


@pytest.fixture(scope="module")
def predictor(panda_dir):
    return VideoPandaPredictor.from_pretrained(panda_dir, GenerationConfig(max_new_tokens=6))


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_video(root / "clip.mp4", moving_square_frames(16, 48, 64, RED), fps=4.0)
    write_video(root / "blue.mp4", moving_square_frames(16, 48, 64, BLUE, seed=3), fps=4.0)
    (root / "notes.txt").write_text("not a video")
    (root / "subdir").mkdir()
    (root / "passwd-link.mp4").symlink_to("/etc/passwd")
    return root


@pytest.fixture(scope="module")
def cli_server(panda_dir, media_root):
    """The real CLI: ``videopanda serve DIR --media-root ROOT --api-key KEY`` in its own process."""
    port = free_port()
    process = start_cli_server([str(panda_dir), "--media-root", str(media_root), "--api-key", KEY,
                                "--max-wait-ms", "1", "--allow-private-urls"], port, KEY)
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(cli_server):
    return openai.OpenAI(base_url=cli_server, api_key=KEY, max_retries=0, timeout=120)


def ask(client, content, **kwargs):
    response = client.chat.completions.create(model="panda", max_tokens=6,
                                              messages=[{"role": "user", "content": content}], **kwargs)
    return response.choices[0].message.content


def post(url, body, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=120, **kwargs)


def answer(predictor, visuals, question=QUESTION, max_new_tokens=6):
    return predictor.answer([visuals], [question], max_new_tokens=max_new_tokens)[0]


def test_plain_completion_matches_the_predictor_with_usage(client, predictor):
    expected = predictor.generate([GenerationRequest("Say something.", max_new_tokens=4)])[0]
    response = client.chat.completions.create(model="panda", max_tokens=4,
                                              messages=[{"role": "user", "content": "Say something."}])
    choice = response.choices[0]
    assert choice.message.content == expected.text and expected.text
    assert choice.finish_reason == expected.finish_reason
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (expected.prompt_tokens,
                                                                                expected.completion_tokens)
    assert response.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens
    assert [m.id for m in client.models.list().data] == ["panda"]


def test_streaming_arrives_token_by_token(client, predictor):
    expected = predictor.generate([GenerationRequest(QUESTION, max_new_tokens=6)])[0]
    stream = client.chat.completions.create(model="panda", max_tokens=6, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2 and "".join(deltas) == expected.text
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [expected.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected.completion_tokens


def test_video_url_in_every_form(client, predictor, media_root):
    expected = answer(predictor, predictor.load_video(media_root / "clip.mp4"))
    clip = media_root / "clip.mp4"
    for url in (clip.as_uri(), str(clip), "clip.mp4"):
        assert ask(client, [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]) \
            == expected, url
    bare = [{"type": "text", "text": QUESTION}, {"type": "video_url", "video_url": "clip.mp4"}]
    assert ask(client, bare) == expected
    assert ask(client, QUESTION, extra_body={"video": "clip.mp4"}) == expected
    blue = answer(predictor, predictor.load_video(media_root / "blue.mp4"))
    assert blue != expected  # the model's answers follow the video
    assert ask(client, [{"type": "video_url", "video_url": {"url": "blue.mp4"}}, QUESTION]) == blue


def test_image_url_frames_are_one_video(client, predictor):
    """lmms-eval's default request: the question, then the video as base64 PNG image_url frames."""
    answers = {}
    for color in (RED, BLUE):
        frames = moving_square_frames(11, 48, 64, color)  # lmms-eval: 10 uniform frames plus the last
        expected = answer(predictor, predictor.preprocess_video(frames[[0, 1, 2, 4, 5, 7, 8, 10]]))  # 1/s, 8 of 11
        lmms_eval_simple = [{"type": "text", "text": QUESTION},
                            *({"type": "image_url", "image_url": {"url": png_data_url(f)}} for f in frames)]
        assert ask(client, lmms_eval_simple, temperature=0) == expected
        lmms_eval_chat = [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
                          {"role": "user", "content": [*lmms_eval_simple[1:], {"type": "text", "text": QUESTION}]}]
        response = client.chat.completions.create(model="panda", max_tokens=6, temperature=0, messages=lmms_eval_chat)
        assert response.choices[0].message.content == expected
        eight = [*({"type": "image_url", "image_url": {"url": png_data_url(f)}} for f in frames[:8]), QUESTION]
        assert ask(client, eight) == answer(predictor, predictor.preprocess_video(frames[:8]))
        answers[color] = expected
    assert answers[RED] != answers[BLUE] != answer(predictor, None)  # the frames reach the model


def test_one_image_url_is_an_image(client, predictor):
    image = moving_square_frames(1, 48, 64, RED)[0]
    expected = answer(predictor, predictor.preprocess_image(image))
    assert ask(client, [{"type": "image_url", "image_url": {"url": png_data_url(image)}}, QUESTION]) == expected


def test_data_url_and_http_url_videos(client, predictor, media_root):
    expected = answer(predictor, predictor.load_video(media_root / "clip.mp4"))
    data = "data:video/mp4;base64," + base64.b64encode((media_root / "clip.mp4").read_bytes()).decode()
    assert ask(client, [{"type": "video_url", "video_url": {"url": data}}, QUESTION]) == expected
    files = StaticFiles(media_root)
    try:
        assert ask(client, [{"type": "video_url", "video_url": {"url": f"{files.url}/clip.mp4"}}, QUESTION]) == expected
        with pytest.raises(openai.BadRequestError, match="HTTP 404"):
            ask(client, [{"type": "video_url", "video_url": {"url": f"{files.url}/missing.mp4"}}, QUESTION])
    finally:
        files.close()


def test_num_frames_and_media_io_kwargs_are_honoured(client, predictor, media_root):
    four = answer(predictor, predictor.load_video(media_root / "clip.mp4", num_frames=4))
    content = [{"type": "video_url", "video_url": {"url": "clip.mp4"}}, QUESTION]
    assert ask(client, content, extra_body={"media_io_kwargs": {"video": {"num_frames": 4}}}) == four
    assert ask(client, content, extra_body={"num_frames": 4}) == four
    for bad in ({"num_frames": 0}, {"num_frames": 10_000}, {"media_io_kwargs": {"video": {"fps": 2}}}):
        with pytest.raises(openai.BadRequestError):
            ask(client, content, extra_body=bad)


def test_stop_sequences_and_finish_reasons(client, predictor):
    full = predictor.generate([GenerationRequest(QUESTION, max_new_tokens=8)])[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    expected = cut_at_stops(full.text, [stop]).strip()
    response = client.chat.completions.create(model="panda", max_tokens=8, stop=[stop],
                                              messages=[{"role": "user", "content": QUESTION}])
    assert response.choices[0].message.content == expected and response.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="panda", max_tokens=8, stop=stop, stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    cut = client.chat.completions.create(model="panda", max_tokens=2, messages=[{"role": "user", "content": QUESTION}])
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2


BAD_REQUESTS = {
    "n=2": ({"n": 2}, 400, "n"),
    "max_tokens 0": ({"max_tokens": 0}, 400, "max_tokens"),
    "max_tokens over the limit": ({"max_tokens": 10**6}, 400, "max_tokens"),
    "unknown model": ({"model": "gpt-4o"}, 404, "model"),
    "unknown field": ({"tools": [{"type": "function"}]}, 400, "tools"),
    "logprobs": ({"logprobs": True}, 400, "logprobs"),
    "audio part": ({"messages": [{"role": "user", "content": [
        "hi", {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}, 400,
        "messages[0].content[1]"),
    "audio_url part": ({"messages": [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "x.wav"}}, "hi"]}]}, 400, "messages[0].content[0]"),
    "two videos": ({"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": "clip.mp4"}, {"type": "video_url", "video_url": "clip.mp4"}]}]}, 400,
        "messages[0].content[1]"),
    "tool role": ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
    "too many stops": ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "video_url without url": ({"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"path": "clip.mp4"}}]}]}, 400, "messages[0].content[0]"),
    "assistant last": ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                       400, "messages"),
    "messages not a list": ({"messages": "hello"}, 400, None),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_requests_get_openai_error_objects(cli_server, name):
    change, status, param = BAD_REQUESTS[name]
    reply = post(cli_server, {"model": "panda", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}],
                              **change})
    error = reply.json()["error"]
    assert reply.status_code == status and error["message"] and error["type"] and error["param"] == param


def test_the_sdk_shows_the_servers_message(client):
    with pytest.raises(openai.BadRequestError, match="n=2 is not supported"):
        ask(client, "hi", n=2)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_malformed_input_is_never_a_500_nor_echoed(cli_server):
    payload = base64.b64encode(os.urandom(3000)).decode()
    def one_part(kind: str, url: str) -> dict:
        return {"messages": [{"role": "user", "content": [{"type": kind, kind: url}]}]}

    cases = [
        one_part("video_url", f"data:video/mp4;base64,{payload}"),
        one_part("image_url", f"data:image/png;base64,{payload}"),
        one_part("image_url", f"data:image/png;base64,!{payload}"),
        {"messages": [{"role": "user", "content": 12345}], "note": payload},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": payload},
    ]
    for body in cases:
        reply = post(cli_server, body)
        assert 400 <= reply.status_code < 500 and payload[:40] not in reply.text, reply.text[:200]
    reply = httpx.post(f"{cli_server}/chat/completions", content=b"{not json", timeout=30,
                       headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert reply.status_code == 400 and "error" in reply.json()


def test_paths_outside_the_media_root_reveal_nothing(cli_server, media_root):
    def message(url):
        reply = post(cli_server, {"max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, "What is this?"]}]})
        assert reply.status_code == 400
        return reply.json()["error"]["message"]

    refused = {message(url) for url in (
        "/etc/passwd", "file:///etc/passwd", "../../../../etc/passwd", "/etc/no-such-file", "missing.mp4",
        "subdir", "notes.txt", "passwd-link.mp4", str(media_root / ".." / "etc" / "passwd"),
        "file://otherhost/etc/passwd",
    )}
    assert len(refused) == 1 and "passwd" not in refused.pop()


def test_api_key_is_required(cli_server):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert post(cli_server, body, key=None).status_code == 401
    assert post(cli_server, body, key="wrong").json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{cli_server}/models").status_code == 401


@pytest.fixture(scope="module")
def served_model(panda_dir):
    return load_served_model(str(panda_dir))


@pytest.fixture
def app_server(served_model):
    """Factory: an in-process uvicorn server of ``served_model`` with a given ServeConfig."""
    servers = []

    def _start(config: ServeConfig):
        app = create_app(served_model, config)
        servers.append(start_uvicorn(app))
        return servers[-1][2], app

    yield _start
    for server, thread, _ in servers:
        server.should_exit = True
        thread.join(timeout=10)


def test_local_paths_refused_without_a_media_root(app_server, media_root):
    url, _ = app_server(ServeConfig())
    reply = post(url, {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": str(media_root / "clip.mp4")}, "hi"]}]})
    assert reply.status_code == 400 and "without --media-root" in reply.json()["error"]["message"]


def test_body_and_download_sizes_are_bounded(app_server, media_root):
    size = (media_root / "clip.mp4").stat().st_size
    policy = MediaPolicy(media_root, max_bytes=size - 1, allow_private_hosts=True)
    url, _ = app_server(ServeConfig(max_body_bytes=20_000, media=policy))
    big = post(url, {"messages": [{"role": "user", "content": "x" * 30_000}]})
    assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
    files = StaticFiles(media_root)
    try:
        reply = post(url, {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": f"{files.url}/clip.mp4"}, "hi"]}]})
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "media_too_large"
    finally:
        files.close()


def test_downloads_from_this_machine_are_refused_by_default(app_server, media_root):
    """A URL on loopback is refused before anything is fetched, redirects included (the server's own network)."""
    files = StaticFiles(media_root, redirects={"/hop": "/clip.mp4", "/loop": "/loop"})
    try:
        url, _ = app_server(ServeConfig(media=MediaPolicy(media_root)))
        reply = post(url, {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": f"{files.url}/clip.mp4"}, "hi"]}]})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "private_url_refused"
        assert "--allow-private-urls" in reply.json()["error"]["message"] and files.requested == []

        url, _ = app_server(ServeConfig(media=MediaPolicy(media_root, allow_private_hosts=True)))
        hop = post(url, {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": f"{files.url}/hop"}, "hi"]}]})
        assert hop.status_code == 200 and files.requested == ["/hop", "/clip.mp4"]
        loop = post(url, {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": f"{files.url}/loop"}, "hi"]}]})
        assert loop.status_code == 400 and "redirects" in loop.json()["error"]["message"]
    finally:
        files.close()


def test_concurrent_requests_share_a_batch(app_server, predictor, media_root):
    """Four clients at once: one batch of four, each reply its own (own video, question and max_tokens)."""
    url, app = app_server(ServeConfig(media=MediaPolicy(media_root), max_batch_size=4, max_wait_ms=5000))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
    jobs = [("clip.mp4", QUESTION, 3), ("blue.mp4", QUESTION, 4), (None, "Say something.", 5), ("clip.mp4", "Why?", 2)]
    replies = [None] * len(jobs)

    def call(i):
        video, question, max_tokens = jobs[i]
        content = [question] + ([{"type": "video_url", "video_url": video}] if video else [])
        replies[i] = client.chat.completions.with_raw_response.create(
            model="panda", max_tokens=max_tokens, messages=[{"role": "user", "content": content}])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert app.state.batcher.batch_sizes == [4]
    for (video, question, max_tokens), raw in zip(jobs, replies, strict=True):
        assert raw.headers["x-videopanda-batch-size"] == "4"
        reply = raw.parse()
        visuals = predictor.load_video(media_root / video) if video else None
        assert reply.choices[0].message.content == answer(predictor, visuals, question, max_tokens)
        assert reply.usage.completion_tokens <= max_tokens


def test_a_failed_batch_is_retried_alone_but_never_resends_streamed_text(predictor):
    """A batch failing mid-generation (as out of memory would): the request that streamed nothing yet is
    generated again alone and gets its own answer; the streamed one gets the error, its text sent once."""

    def generate_failing_in_batches(requests):
        if len(requests) > 1:
            for request in requests:
                if request.on_text is not None:
                    request.on_text("partial")
            raise RuntimeError("out of memory")
        return predictor.generate(requests)

    batcher = DynamicBatcher(generate_failing_in_batches, max_batch_size=2, max_wait_s=5)
    streamed = []
    try:
        plain = batcher.submit(GenerationRequest("Say something.", max_new_tokens=4))
        streaming = batcher.submit(GenerationRequest("Why?", max_new_tokens=3, on_text=streamed.append))
        expected = predictor.generate([GenerationRequest("Say something.", max_new_tokens=4)])[0]
        assert plain.future.result(timeout=120) == expected
        with pytest.raises(RuntimeError, match="out of memory"):
            streaming.future.result(timeout=120)
        assert streamed == ["partial"] and batcher.batch_sizes == [2, 1]
    finally:
        batcher.close()


def test_a_port_in_use_is_reported_before_serving():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "videopanda", "serve", "smollm2", "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in output
    assert "serving" not in output and "Traceback" not in output


@pytest.fixture(scope="module")
def smollm2_chat(smollm2_converted):
    from videopanda.inference import ChatLLM

    return ChatLLM.load("smollm2")


@pytest.mark.slow
def test_openai_judge_against_the_real_smollm2_server(smollm2_chat, tmp_path):
    from videopanda.eval.judge.base import LLMJudge, QAItem
    from videopanda.eval.judge.local_backend import LocalBackend
    from videopanda.eval.judge.openai_backend import OpenAIBackend, OpenAIJudgeConfig
    from videopanda.eval.judge.prompts import QA
    from videopanda.eval.judge.runner import run_judge
    from videopanda.serve.models import ChatLLMModel

    server, thread, url = start_uvicorn(create_app(ChatLLMModel(smollm2_chat), ServeConfig(default_max_tokens=6)))
    try:
        assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "smollm2"
        item = QAItem("1", "what colour is the ball?", "red", "The ball is red.")
        remote = LLMJudge(OpenAIBackend(OpenAIJudgeConfig(model="smollm2", base_url=url, max_tokens=6,
                                                          timeout_s=300, max_attempts=1)), parse_attempts=1)
        results = run_judge([item], tmp_path, remote, QA, workers=1)
        verdict = (tmp_path / "verdicts.jsonl").read_text()
        # The server's greedy reply is what the same model gives in-process (the local backend).
        local_reply = LocalBackend(smollm2_chat, max_new_tokens=6).complete(*QA.render(item))
        assert local_reply and f'"raw": {json.dumps(local_reply)}' in verdict
        assert results["judged"] + results["failures"] == 1 and results["judge"]["backend"] == "openai"
        image = {"type": "image_url", "image_url": {"url": png_data_url(np.zeros((8, 8, 3), np.uint8))}}
        refused = post(url, {"messages": [{"role": "user", "content": ["hi", image]}]}, key=None)
        assert refused.status_code == 400 and "messages[0].content[1]" in refused.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
