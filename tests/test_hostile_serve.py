"""Hostile and careless inputs against a real ``videopanda serve`` process and the CLI: bounded work everywhere.

Two servers run as their own processes: a tiny random Video-Panda and a tiny random plain LLM (the
``serve smollm2`` code path, cheaply); ``serve smollm2`` itself is the slow test. Every refusal is an
OpenAI error object, and the server answers the next request. Frame counts follow one rule
(``videopanda.limits``): the server's message is the CLI's. A dropped stream stops its generation (the
server's log says after how many tokens) and the next request is served about as fast as on an idle server.
Downloads connect to the address that was checked, tested with a resolver that rebinds.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import moving_square_frames, tiny_llama_config
from serve_support import StaticFiles, free_port, start_cli_server
from videopanda.cli import main
from videopanda.data.video_writer import write_video
from videopanda.serve.media import MediaPolicy, media_file
from videopanda.serve.protocol import APIError

HUGE_TEXT = "lorem ipsum " * (8 * 2**20 // 12)  # 8 MiB, under the 64 MiB body limit
STOPPED = re.compile(r"a request whose client left stopped after (\d+) generated tokens")
DROPPED_MAX_TOKENS = 2048


class Served:
    """A ``videopanda serve`` process: its /v1 URL, pid and log file."""

    def __init__(self, args: list[str], log_path: Path, timeout_s: float = 300) -> None:
        port = free_port()
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = start_cli_server([*args, "--max-wait-ms", "1"], port, timeout_s=timeout_s, log=self._log)
        self.url = f"http://127.0.0.1:{port}/v1"

    def post(self, body: dict, timeout: float = 120) -> httpx.Response:
        return httpx.post(f"{self.url}/chat/completions", json=body, timeout=timeout)

    def ask(self, text: str = "Tell a story.", max_tokens: int = 4, **extra) -> httpx.Response:
        return self.post({"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra})

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "clip.mp4", moving_square_frames(16, 48, 64), fps=4.0)
    return root


@pytest.fixture(scope="module")
def panda(tiny_videopanda_dir, media_root, precision, tmp_path_factory):
    server = Served([str(tiny_videopanda_dir), "--media-root", str(media_root), "--dtype", precision],
                    tmp_path_factory.mktemp("logs") / "panda.log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A tiny random LLaMA with SmolLM2's tokenizer (and chat template): a plain chat LLM directory."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=len(smollm2_tokenizer),
                                               pad_token_id=smollm2_tokenizer.pad_token_id))
    path = tmp_path_factory.mktemp("llm") / "tiny-llm"
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def plain_llm(tiny_llm_dir, tmp_path_factory):
    server = Served([str(tiny_llm_dir)], tmp_path_factory.mktemp("logs") / "llm.log")
    yield server
    server.close()


def assert_error(reply: httpx.Response, status: int, param: str | None, *words: str) -> str:
    """``reply`` is an OpenAI error object with ``status`` naming ``param``; returns its message."""
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    for word in words:
        assert word in error["message"]
    return error["message"]


@pytest.mark.parametrize("server", ["panda", "plain_llm"])
def test_an_oversized_message_is_refused_untokenised_and_the_server_answers_on(server, request):
    served = request.getfixturevalue(server)
    assert served.ask().status_code == 200
    before = served.peak_rss_mb()
    assert_error(served.ask(HUGE_TEXT), 400, "messages", "characters", "context")
    assert_error(served.ask(HUGE_TEXT, stream=True), 400, "messages", "characters")  # before any event
    # Tokenising it whole took about 160 MB per MB of text (a 50 MB message: 7.9 GB): bounded now.
    assert served.peak_rss_mb() - before < 500
    assert served.ask().status_code == 200


@pytest.mark.parametrize("server", ["panda", "plain_llm"])
def test_oversized_max_tokens_are_refused(server, request):
    served = request.getfixturevalue(server)
    assert_error(served.ask(max_tokens=10**9), 400, "max_tokens", "limit")
    reply = served.post({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10**12})
    assert_error(reply, 400, "max_completion_tokens", "limit")
    assert served.ask().status_code == 200


def cli_error(capsys, argv: list[str]) -> str:
    """The one error line ``videopanda ARGV`` prints (it must exit 1)."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]  # progress bars may precede it
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("frames", [7, 0, 2, 100_000])
def test_frame_counts_are_refused_by_the_server_as_by_the_cli(frames, panda, tiny_videopanda_dir, media_root, capsys):
    video = {"type": "video_url", "video_url": {"url": "clip.mp4"}}
    for extra in ({"num_frames": frames}, {"media_io_kwargs": {"video": {"num_frames": frames}}}):
        reply = panda.post({"messages": [{"role": "user", "content": [video, "What moves?"]}], "max_tokens": 2,
                            **extra})
        message = assert_error(reply, 400, "num_frames", f"num_frames={frames}", "multiple of the chunk length 4")
    line = cli_error(capsys, ["ask", "--model", str(tiny_videopanda_dir), "--video", str(media_root / "clip.mp4"),
                              "--num-frames", str(frames), "What moves?"])
    assert f"error: {message} (" in line  # one rule, one message
    assert panda.post({"messages": [{"role": "user", "content": [video, "What moves?"]}], "max_tokens": 2,
                       "num_frames": 8}).status_code == 200


def test_ask_refuses_100000_frames_before_loading_or_decoding_anything(tiny_videopanda_dir, media_root, tmp_path):
    """A model directory with only its config.json: a refusal that names the frames (not the missing weights)
    shows that nothing was loaded, and so nothing decoded, before the frame count was checked."""
    model = tmp_path / "config-only"
    model.mkdir()
    (model / "config.json").write_text((tiny_videopanda_dir / "config.json").read_text())
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "videopanda", "ask", "--model", str(model), "--video",
                             str(media_root / "clip.mp4"), "--num-frames", "100000", "q?"],
                            capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if "WARNING" not in line]  # deepspeed's accelerator line
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "num_frames=100000" in lines[0] and "frame budget" in lines[0] and "Traceback" not in result.stderr
    print(f"refused in {elapsed:.1f} s including the interpreter's start (load average {os.getloadavg()})")


def test_ask_refuses_an_oversized_question_untokenised(tiny_videopanda_dir, media_root, capsys):
    line = cli_error(capsys, ["ask", "--model", str(tiny_videopanda_dir), "--video", str(media_root / "clip.mp4"),
                              "--max-new-tokens", "2", "x" * 2_000_000])
    assert "2000000 characters" in line and "context" in line


@pytest.mark.parametrize("tokens", [0, 10**9])
def test_ask_refuses_new_tokens_outside_the_context(tokens, tiny_videopanda_dir, media_root, capsys):
    line = cli_error(capsys, ["ask", "--model", str(tiny_videopanda_dir), "--video", str(media_root / "clip.mp4"),
                              "--max-new-tokens", str(tokens), "What moves?"])
    assert f"max_new_tokens={tokens}" in line and "4096" in line  # 0 no longer silently means the default


@pytest.mark.parametrize("server", ["panda", "plain_llm"])
def test_a_dropped_stream_stops_its_generation_and_frees_the_server(server, request):
    served = request.getfixturevalue(server)
    idle, stops = statistics.median(timed(served.ask) for _ in range(3)), len(STOPPED.findall(served.log()))
    drop_stream(served, after_events=3)
    assert_freed(served, idle, stops)


def drop_stream(served: Served, after_events: int) -> None:
    """Ask for a long streamed story and hang up after ``after_events`` server-sent events."""
    with httpx.Client(timeout=300) as client, client.stream("POST", f"{served.url}/chat/completions", json={
        "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": DROPPED_MAX_TOKENS,
        "stream": True,
    }) as response:
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data:")
            if events == after_events:
                return


def test_a_client_that_stops_waiting_for_a_plain_reply_stops_its_generation(panda):
    idle, stops = statistics.median(timed(panda.ask) for _ in range(3)), len(STOPPED.findall(panda.log()))
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        panda.post({"messages": [{"role": "user", "content": "Tell a long story."}],
                    "max_tokens": DROPPED_MAX_TOKENS}, timeout=max(1.0, 2 * idle))
    assert_freed(panda, idle, stops)


def assert_freed(served: Served, idle: float, stops: int) -> None:
    """The next request is served about as fast as on an idle server, and the log says the abandoned one
    (after ``stops`` earlier ones) stopped well before its max_tokens."""
    after = timed(served.ask)
    print(f"idle {idle:.2f} s, after a client left {after:.2f} s (load average {os.getloadavg()})")
    assert after < 3 * idle + 1.0
    wait_for(lambda: len(STOPPED.findall(served.log())) > stops)
    generated = [int(n) for n in STOPPED.findall(served.log())]
    assert len(generated) > stops and generated[-1] < DROPPED_MAX_TOKENS // 4


def timed(call) -> float:
    started = time.monotonic()
    assert call().status_code == 200
    return time.monotonic() - started


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.slow
def test_serve_smollm2_survives_an_oversized_message_and_a_dropped_story(tmp_path, smollm2_converted):
    served = Served(["smollm2"], tmp_path / "smollm2.log", timeout_s=600)
    try:
        idle = statistics.median(timed(served.ask) for _ in range(3))
        before = served.peak_rss_mb()
        assert_error(served.ask("word " * 1_000_000), 400, "messages", "characters")  # 5 MB: once OOM-killed
        assert served.peak_rss_mb() - before < 500
        drop_stream(served, after_events=6)
        assert_freed(served, idle, 0)
    finally:
        served.close()


PUBLIC = "93.184.216.34"  # any global address: the test never reaches it


@pytest.fixture
def rebinding_dns(monkeypatch):
    """``rebind.test`` resolves to a public address the first time and to 127.0.0.1 after (DNS rebinding);
    connections to the public address are refused and recorded, others made for real."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    lookups, connections = [], []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = PUBLIC if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]

    def create_connection(address, *args, **kwargs):
        connections.append(address)
        if address[0] == PUBLIC:
            raise ConnectionRefusedError(f"{PUBLIC} is not reachable from a test")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return lookups, connections


def test_a_download_connects_to_the_address_that_was_checked(rebinding_dns, media_root):
    lookups, connections = rebinding_dns
    files = StaticFiles(media_root)
    port = int(files.url.rsplit(":", 1)[1])
    try:
        with pytest.raises(APIError, match="failed"), media_file(f"http://rebind.test:{port}/clip.mp4", "video",
                                                                 MediaPolicy(download_timeout_s=5)):
            pass
        assert files.requested == []  # the second answer (127.0.0.1) was never used
        assert lookups == ["rebind.test"] and connections == [(PUBLIC, port)]
    finally:
        files.close()


def test_a_pinned_download_still_names_its_host(monkeypatch, media_root):
    """With private hosts allowed, ``media.test`` -> 127.0.0.1 is fetched from that address, as ``media.test``."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == "media.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    files = StaticFiles(media_root, redirects={"/old.mp4": "/clip.mp4"})
    port = int(files.url.rsplit(":", 1)[1])
    try:
        policy = MediaPolicy(allow_private_hosts=True, download_timeout_s=5)
        with media_file(f"http://media.test:{port}/old.mp4", "video", policy) as path:
            assert path.read_bytes() == (media_root / "clip.mp4").read_bytes()
        assert files.requested == ["/old.mp4", "/clip.mp4"] and files.hosts == [f"media.test:{port}"] * 2
    finally:
        files.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command makes the test certificate")
@pytest.mark.parametrize("cert_name", ["media.test", "other.test"])
def test_a_pinned_https_download_checks_the_hosts_certificate(cert_name, monkeypatch, media_root, tmp_path):
    """``media.test`` -> 127.0.0.1 over TLS: SNI says ``media.test`` and only a certificate for it is accepted."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={cert_name}",
                    "-addext", f"subjectAltName=DNS:{cert_name}"], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # httpx trusts it as the only CA
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: real_getaddrinfo(
        "127.0.0.1" if host == "media.test" else host, *args, **kwargs))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str] = []
    context.sni_callback = lambda _socket, name, _context: names.append(name)
    files = StaticFiles(media_root, tls=context)
    port = int(files.url.rsplit(":", 1)[1])
    policy = MediaPolicy(allow_private_hosts=True, download_timeout_s=5)
    try:
        if cert_name == "media.test":
            with media_file(f"https://media.test:{port}/clip.mp4", "video", policy) as path:
                assert path.read_bytes() == (media_root / "clip.mp4").read_bytes()
        else:
            with pytest.raises(APIError, match="failed"), media_file(f"https://media.test:{port}/clip.mp4", "video",
                                                                     policy):
                pass
        assert names == ["media.test"]
    finally:
        files.close()
