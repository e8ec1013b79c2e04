"""vLLM with our plugin answers as `videopanda ask` (float32, CPU), and `eval run --endpoint` against it writes
the local `eval run`'s merge.jsonl. Runs only with ``--vllm-python PATH`` (vLLM's own environment, built by
``scripts/vllm_env.sh``); the server starts once (1-2 minutes on 2 cores) on the reduced quickstart's model.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from conftest import assert_same_greedy_answer
from videopanda.cli import main
from videopanda.data.decode import find_video_file
from videopanda.data.synth import QA_DIR
from videopanda.eval.jsonl import read_jsonl
from videopanda.inference import GenerationConfig, VideoPandaPredictor

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 12
SERVED_NAME = "videopanda-quickstart"
START_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def vllm_python(pytestconfig) -> Path:
    path = pytestconfig.getoption("--vllm-python")
    if not path:
        pytest.skip("needs --vllm-python PATH (vLLM's environment: scripts/vllm_env.sh)")
    return Path(path)


@pytest.fixture(scope="module")
def predictor(quickstart_dir):
    """`videopanda ask`'s path in float32 on the CPU (tests/test_same_answers.py: ask == predictor.ask)."""
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    return VideoPandaPredictor.from_pretrained(quickstart_dir / "model", config, dtype="float32")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(vllm_python: Path, model_dir: Path, media_root: Path, log: Path):
    """`python -m videopanda.vllm.serve MODEL_DIR` in float32, files under ``media_root`` allowed; its base URL."""
    port = _free_port()
    command = [str(vllm_python), "-m", "videopanda.vllm.serve", str(model_dir), "--port", str(port),
               "--dtype", "float32", "--served-model-name", SERVED_NAME, "--allowed-local-media-path",
               str(media_root), "--max-model-len", "4096", "--max-num-seqs", "8",
               "--kv-cache-memory-bytes", str(2**30)]  # on CPU: a KV cache of 1 GiB, not 92% of the memory
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=10)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None, f"vLLM exited ({server.returncode}):\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"vLLM did not start:\n{log.read_text()[-4000:]}"
                time.sleep(2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def vllm_url(vllm_python, quickstart_dir, tmp_path_factory):
    """The quickstart's model on vLLM."""
    with served(vllm_python, quickstart_dir / "model", quickstart_dir, tmp_path_factory.mktemp("vllm") / "log") as url:
        yield url


def _chat(url: str, video_url: str, question: str) -> str:
    return _chat_with_usage(url, video_url, question)[0]


def _chat_with_usage(url: str, video_url: str, question: str) -> tuple[str, int]:
    """The greedy reply (stripped, as our decode strips it) and its prompt's token count."""
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=300)
    reply = client.chat.completions.create(
        model=SERVED_NAME, max_tokens=MAX_NEW_TOKENS, temperature=0,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video_url}},
                                               {"type": "text", "text": question}]}])
    return (reply.choices[0].message.content or "").strip(), reply.usage.prompt_tokens if reply.usage else -1


def _prompt_tokens(predictor, video: Path, question: str) -> int:
    """Our processor's prompt length: the template's text and each frame's visual tokens."""
    return predictor.processor.build_prompt(question, predictor.load_video(video))["input_ids"].shape[1]


def test_vllm_answers_as_ask(vllm_url, predictor, held_out, quickstart_dir):
    assert len(held_out) >= 3
    answers = {}
    for qid, video, question in held_out:  # the server reads the file (file:// under its allowed folder)
        answers[qid], prompt_tokens = _chat_with_usage(vllm_url, video.resolve().as_uri(), question)
        assert prompt_tokens == _prompt_tokens(predictor, video, question)
        assert_same_greedy_answer(predictor, predictor.load_video(video), question, answers[qid])
    qid, video, question = held_out[0]  # the video inline (data: URL), as `eval run --endpoint` sends it
    inline = f"data:video/mp4;base64,{base64.b64encode(video.read_bytes()).decode('ascii')}"
    assert _chat(vllm_url, inline, question) == answers[qid]
    command = [sys.executable, "-m", "videopanda", "ask", "--model", str(quickstart_dir / "model"), "--video",
               str(video), "--max-new-tokens", str(MAX_NEW_TOKENS), "--dtype", "float32", "--json", question]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1])["answer"] == predictor.ask(video, question)


def test_eval_run_endpoint_writes_the_local_merge_jsonl(vllm_url, predictor, quickstart_dir, tmp_path):
    qa = quickstart_dir / "data" / QA_DIR
    common = ["--questions", str(qa / "test_q.json"), "--answers", str(qa / "test_a.json"), "--video-dir",
              str(qa / "videos"), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    local, served = tmp_path / "local", tmp_path / "vllm"
    assert main(["eval", "run", str(quickstart_dir / "model"), *common, "--output-dir", str(local),
                 "--batch-size", "1", "--dtype", "float32"]) == 0
    assert main(["eval", "run", "--endpoint", vllm_url, "--endpoint-model", SERVED_NAME, *common,
                 "--output-dir", str(served), "--workers", "4"]) == 0
    local_rows = {str(r["id"]): r for r in read_jsonl(local / "merge.jsonl")}
    served_rows = {str(r["id"]): r for r in read_jsonl(served / "merge.jsonl")}
    assert set(served_rows) == set(local_rows) and len(local_rows) >= 3
    videos = {str(q["question_id"]): find_video_file(qa / "videos", q["video_name"])
              for q in json.loads((qa / "test_q.json").read_text())}
    for qid, row in local_rows.items():
        assert {k: v for k, v in served_rows[qid].items() if k != "pred"} == {k: v for k, v in row.items()
                                                                               if k != "pred"}
        if served_rows[qid]["pred"] != row["pred"]:  # up to near-ties of the logits
            assert_same_greedy_answer(predictor, predictor.load_video(videos[qid]), row["question"],
                                      served_rows[qid]["pred"])


@pytest.fixture(scope="module")
def converted_release(tmp_path_factory) -> Path:
    """`videopanda convert --release` of a random release-layout checkpoint (tests/test_release.py's fake
    release: LLaVA config, word-level tokenizer, teacher weights), its LLaMA at head size 64 (vLLM's CPU
    attention takes 32 and up)."""
    import torch

    from conftest import tiny_llama_config
    from test_release import WORDS, release_config_json, write_release
    from videopanda.model.configuration_videopanda import VideoPandaConfig
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

    torch.manual_seed(0)
    text = tiny_llama_config(vocab_size=len(WORDS), hidden_size=128, num_attention_heads=2, num_key_value_heads=2)
    model = VideoPandaForCausalLM(VideoPandaConfig(
        text_config=text, stab_hidden_size=32, image_size=112, teacher_image_size=56, use_distillation=True,
        teacher_hidden_size=16)).eval()
    root = tmp_path_factory.mktemp("release")
    release = write_release(root / "release", model, "safetensors")
    (release / "config.json").write_text(json.dumps({**release_config_json(), "hidden_size": 128,
                                                     "num_attention_heads": 2}))
    assert main(["convert", "--release", str(release), "--out", str(root / "ours")]) == 0
    return root / "ours"


def test_vllm_answers_as_ask_on_a_converted_release(vllm_python, converted_release, held_out, tmp_path):
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    predictor = VideoPandaPredictor.from_pretrained(converted_release, config, dtype="float32")
    assert predictor.template == "vicuna_v1_eval"  # served through our Vicuna chat template
    media = held_out[0][1].parent
    with served(vllm_python, converted_release, media, tmp_path / "log") as url:
        for i, (_, video, _) in enumerate(held_out):
            question = f"w{3 + i} w7 w12"  # words of the release tokenizer's vocabulary
            answer, prompt_tokens = _chat_with_usage(url, video.resolve().as_uri(), question)
            assert prompt_tokens == _prompt_tokens(predictor, video, question)
            assert answer == predictor.ask(video, question)  # (the near-tie helper's stop strings need a BPE)
