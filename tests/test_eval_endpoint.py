"""`eval run --endpoint`: a served model through our eval. Against a real `videopanda serve` on 127.0.0.1
(the same answers as the local run), and against scripted servers for the wire format, refusals and retries."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import moving_square_frames
from videopanda.cli import main
from videopanda.data.decode import read_video_frames
from videopanda.data.video_writer import write_video
from videopanda.eval.jsonl import read_jsonl


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory):
    """Four questions over three real videos, one question without a video and one over a corrupt file."""
    root = tmp_path_factory.mktemp("qa")
    for k, name in enumerate(("clip0.mp4", "clip1.avi", "clip2.gif")):
        write_video(root / "videos" / name, moving_square_frames(12, 48, 64, seed=k), fps=4.0)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    names = ["clip0", "clip1", "clip2", "clip0", "gone", "broken"]
    (root / "test_q.json").write_text(json.dumps(
        [{"video_name": n, "question": f"what happens in {n}, take {i}?", "question_id": f"q{i}"}
         for i, n in enumerate(names)]))
    (root / "test_a.json").write_text(json.dumps(
        [{"answer": f"answer {i}", "type": "t", "question_id": f"q{i}"} for i in range(len(names))]))
    return root


def source(qa_set):
    return ["--questions", str(qa_set / "test_q.json"), "--answers", str(qa_set / "test_a.json"),
            "--video-dir", str(qa_set / "videos")]


def start_videopanda_serve(model_dir, dtype: str, media_root):
    """`videopanda serve MODEL_DIR` as its own process on a free 127.0.0.1 port, serving local files from
    ``media_root``; (base URL, process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "videopanda", "serve", str(model_dir), "--port", str(port),
                                "--dtype", dtype, "--media-root", str(media_root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"videopanda serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("videopanda serve did not start in 180 s")


@pytest.mark.slow
def test_endpoint_run_against_videopanda_serve_equals_the_local_run(qa_set, tiny_videopanda_dir, tmp_path):
    common = [*source(qa_set), "--max-new-tokens", "5", "--dtype", "float32"]
    assert main(["eval", "run", str(tiny_videopanda_dir), *common, "--batch-size", "1",
                 "--output-dir", str(tmp_path / "local")]) == 1  # 'gone' and 'broken' stay unanswered
    url, process = start_videopanda_serve(tiny_videopanda_dir, "float32", qa_set)
    try:
        # 'gone' and 'broken' stay unanswered
        assert main(["eval", "run", "--endpoint", url, "--endpoint-model", tiny_videopanda_dir.name, *common,
                     "--endpoint-video-as", "file_url", "--workers", "2",
                     "--output-dir", str(tmp_path / "served")]) == 1
    finally:
        process.terminate()
        process.wait(timeout=30)
    local, served = (read_jsonl(tmp_path / d / "merge.jsonl") for d in ("local", "served"))
    assert [r["id"] for r in local] == ["q0", "q1", "q2", "q3"]
    assert served == local
    missing = [(m["id"], m["reason"].split(":")[0]) for m in read_jsonl(tmp_path / "served" / "missing.jsonl")]
    local_missing = [m["id"] for m in read_jsonl(tmp_path / "local" / "missing.jsonl")]
    assert local_missing == [m for m, _ in missing] == ["q4", "q5"]
    settings = json.loads((tmp_path / "served" / "run_settings.json").read_text())
    assert settings == {"base_url": url, "model": tiny_videopanda_dir.name, "video_as": "file_url",
                        "max_new_tokens": 5, "benchmark": qa_set.name}


def test_video_url_sends_the_file_inline(qa_set, scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: ("ok", f" reply {n} "))
    # 'gone' and 'broken' stay unanswered
    assert main(["eval", "run", "--endpoint", server.base_url, "--endpoint-model", "m", *source(qa_set),
                 "--max-new-tokens", "7", "--workers", "3", "--output-dir", str(tmp_path)]) == 1
    assert len(server.requests) == 4
    by_question = {r["messages"][0]["content"][1]["text"]: r for r in server.requests}
    body = by_question["what happens in clip1, take 1?"]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("m", 7, 0)
    video, text = body["messages"][0]["content"]
    assert text["type"] == "text" and video["type"] == "video_url"
    head, data = video["video_url"]["url"].split(",", 1)
    assert head == "data:video/x-msvideo;base64"
    assert base64.b64decode(data) == (qa_set / "videos" / "clip1.avi").read_bytes()
    merged = read_jsonl(tmp_path / "merge.jsonl")
    assert [r["id"] for r in merged] == ["q0", "q1", "q2", "q3"] and all(r["pred"].startswith("reply") for r in merged)


def test_frames_are_the_sampled_frames_as_jpeg_images(qa_set, scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: ("ok", "a square"))
    assert main(["eval", "run", "--endpoint", server.base_url, "--endpoint-model", "m", *source(qa_set),
                 "--endpoint-video-as", "frames", "--endpoint-frames", "4", "--max-samples", "1",
                 "--output-dir", str(tmp_path)]) == 0
    parts = server.requests[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]
    expected = read_video_frames(qa_set / "videos" / "clip0.mp4", num_frames=4)  # (4, 48, 64, 3)
    for part, frame in zip(parts[:-1], expected, strict=True):  # the last part is the question
        head, data = part["image_url"]["url"].split(",", 1)
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        assert head == "data:image/jpeg;base64" and image.shape == frame.shape
        assert np.abs(image.astype(int) - frame.astype(int)).mean() < 4  # JPEG at quality 95
    assert json.loads((tmp_path / "run_settings.json").read_text())["num_frames"] == 4


def test_refused_questions_are_listed_then_retried_and_errors_retried(qa_set, scripted_openai_server, tmp_path):
    def script(body, n):
        question = body["messages"][0]["content"][-1]["text"]
        if "take 1?" in question and state["refuse"]:
            return "status", 400
        return ("status", 503) if n % 2 == 0 else ("ok", "fine")  # every other request fails once, then retried

    state = {"refuse": True}
    server = scripted_openai_server(script)
    args = ["eval", "run", "--endpoint", server.base_url, "--endpoint-model", "m", *source(qa_set), "--workers", "1",
            "--output-dir", str(tmp_path)]
    assert main(args) == 1  # 'gone' and 'broken' stay unanswered
    assert [r["id"] for r in read_jsonl(tmp_path / "merge.jsonl")] == ["q0", "q2", "q3"]
    missing = read_jsonl(tmp_path / "missing.jsonl")
    assert [m["id"] for m in missing] == ["q1", "q4", "q5"] and "endpoint refused" in missing[0]["reason"]
    state["refuse"] = False
    assert main(args) == 1  # 'gone' and 'broken' stay unanswered
    assert [r["id"] for r in read_jsonl(tmp_path / "merge.jsonl")] == ["q0", "q1", "q2", "q3"]
    assert [m["id"] for m in read_jsonl(tmp_path / "missing.jsonl")] == ["q4", "q5"]


def test_unreachable_endpoint_and_bad_flags_are_one_line_errors(qa_set, scripted_openai_server, tmp_path, capsys):
    server = scripted_openai_server(lambda body, n: ("status", 503))
    assert main(["eval", "run", "--endpoint", server.base_url, "--endpoint-model", "m", *source(qa_set),
                 "--max-attempts", "2", "--output-dir", str(tmp_path)]) == 1
    assert "rerun to resume" in capsys.readouterr().err
    assert main(["eval", "run", "--endpoint", server.base_url, "--endpoint-model", "m", *source(qa_set),
                 "--endpoint-video-as", "pixels", "--output-dir", str(tmp_path)]) == 1
    assert "video_as must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="one of them"):
        main(["eval", "run", *source(qa_set), "--output-dir", str(tmp_path)])
