"""Shared test fixtures: golden-tensor directory, tiny LLM configs, real video files; how pytest-xdist's workers
share the machine (work units, torch threads)."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


GOLDEN_DIR = REPO_ROOT / "tests" / "golden"


def golden_dir() -> Path:
    """``$VIDEOPANDA_GOLDEN_DIR`` if set (it replaces the default), else the committed ``tests/golden``."""
    return Path(os.environ.get("VIDEOPANDA_GOLDEN_DIR", GOLDEN_DIR))


def golden_cases(kind: str) -> list:
    """Every ``{kind}_*.json`` + ``.safetensors`` pair in the golden directory, as pytest params marked ``golden``.

    A kind with no case yields one skipped param; ``pytest_runtest_makereport`` turns that skip into an error.
    """
    directory = golden_dir()
    cases = sorted(p.with_suffix("") for p in directory.glob(f"{kind}_*.json")
                   if p.with_suffix(".safetensors").exists())
    if not cases:
        skip = pytest.mark.skip(reason=f"no {kind}_* golden cases in {directory}")
        return [pytest.param(None, id=f"no-{kind}-cases", marks=[pytest.mark.golden, skip])]
    return [pytest.param(case, id=case.name, marks=pytest.mark.golden) for case in cases]


def pytest_addoption(parser) -> None:
    parser.addoption("--allow-missing-golden", action="store_true",
                     help="let golden tests skip (e.g. a VIDEOPANDA_GOLDEN_DIR holding only some kinds)")
    parser.addoption("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                     help="precision the inference and quickstart tests run in (default auto: this CPU's choice)")
    parser.addoption("--vllm-python", metavar="PATH",
                     help="the Python of vLLM's environment (scripts/vllm_env.sh): runs tests/test_vllm.py")


@pytest.fixture(scope="session")
def precision(pytestconfig) -> str:
    """The ``--dtype`` every inference entry point gets in the tests (``pytest --precision bfloat16``)."""
    return pytestconfig.getoption("--precision")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "golden: compares with tensors recorded from the public release")
    use_test_cache_dir(config)
    share_cores_between_workers()


def share_cores_between_workers() -> None:
    """In a pytest-xdist worker, torch (and the processes a test starts) get the worker's share of the cores:
    N workers each running torch's default of one thread per core would oversubscribe the machine N times."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not on macOS
    threads = max(1, cores // workers)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the CLI and torchrun subprocesses at start-up


# The longest work units, longest first (`pytest --durations=0`, summed per unit: about 180, 135, then 45 to 15
# seconds on 2 cores). pytest-xdist hands units out in collection order, so these start first and the run ends
# on short units instead of one worker finishing a long one while the other idles.
# test_train_runs' one-process runs (no torchrun): a work unit of their own, beside its two-rank runs.
ONE_PROCESS_RUNS_UNIT = "test_train_runs_one_process"
LONG_UNITS = ("test_train_runs", "quickstart", "test_hostile_serve", ONE_PROCESS_RUNS_UNIT,
              "test_lmms_benchmarks", "test_transformers_processor_suite", "test_serve",
              "test_transformers_model_tests", "test_smollm2_cache", "test_golden_dir", "test_cli_errors",
              "test_train_lora", "test_lmms_plugin", "test_eval_endpoint")


def xdist_unit(item) -> str:
    """The pytest-xdist work unit (``--dist loadgroup``) of a test: its own ``xdist_group`` mark if it has one, else
    its file, so a module's fixtures are made once, except that every test of the session's one reduced quickstart
    (``quickstart_dir``) shares one unit. A unit runs in one worker: test_train_runs' torchrun tests are one unit,
    so no two of their two-rank jobs run at once."""
    if (mark := item.get_closest_marker("xdist_group")) is not None:
        return mark.args[0]
    return "quickstart" if "quickstart_dir" in item.fixturenames else item.path.stem


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_unit(item)))
    rank = {unit: i for i, unit in enumerate(LONG_UNITS)}
    items.sort(key=lambda item: rank.get(xdist_unit(item), len(rank)))  # stable: the rest keep their order


def pytest_xdist_node_collection_finished(node, ids) -> None:
    """Every test's node id must carry its unit (``...@unit``, added by pytest-xdist in the worker): without it
    xdist hands out single tests and each worker builds every shared fixture (quickstart, training runs) again.
    Stop the run rather than let it silently take twice as long."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    lost = [nodeid for nodeid in ids if "@" not in nodeid.rsplit("]", 1)[-1]]
    if lost:
        pytest.exit(f"pytest-xdist did not group {len(lost)} tests into their work units (first: {lost[0]}): this "
                    "pytest and pytest-xdist do not work together (pytest-xdist#1386); install the test extra's "
                    "versions (pip install -e '.[test]'), or run with -n 0", returncode=pytest.ExitCode.USAGE_ERROR)


def use_test_cache_dir(config) -> None:
    """SmolLM2's converted copy in pytest's cache (``.pytest_cache/d/videopanda``), not the user's home: one
    conversion per checkout, kept across runs (``--cache-clear`` drops it); CLI subprocesses get it via the env."""
    from videopanda.cli import CACHE_DIR_ENV
    from videopanda.model.smollm2_cache import set_default_cache_dir

    if os.environ.get(CACHE_DIR_ENV):
        directory = Path(os.environ[CACHE_DIR_ENV])
    elif getattr(config, "cache", None) is not None:
        directory = config.cache.mkdir("videopanda")
    else:  # -p no:cacheprovider
        directory = Path(tempfile.gettempdir()) / f"videopanda-test-cache-{os.getuid()}"
    os.environ[CACHE_DIR_ENV] = str(directory)
    set_default_cache_dir(directory)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped golden test is an error: the fidelity check silently did not happen."""
    report = yield
    if report.skipped and item.get_closest_marker("golden") and not item.config.getoption("--allow-missing-golden"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"golden test skipped ({reason}); pass --allow-missing-golden to allow that"
    return report


def tiny_llama_config(**overrides):
    """A 2-layer, width-32 LLaMA config for fast CPU tests."""
    from transformers import LlamaConfig

    params = dict(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    params.update(overrides)
    return LlamaConfig(**params)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from videopanda.model.llm import find_smollm2_gguf

    return find_smollm2_gguf()


def moving_square_frames(num_frames: int, height: int, width: int, color=(255, 0, 0), seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a square moving left to right on a grey background."""
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, height, width, 3), 60, np.uint8)
    side = max(4, min(height, width) // 4)
    top = int(rng.integers(0, height - side + 1))
    for t in range(num_frames):
        left = int(t * (width - side) / max(1, num_frames - 1))
        frames[t, top : top + side, left : left + side] = color
    return frames


@pytest.fixture
def make_video(tmp_path):
    """Write a real video file: ``make_video("a.mp4", num_frames=16, height=64, width=96, fps=8)``."""
    from videopanda.data.video_writer import write_video

    def _make(name: str, num_frames: int = 16, height: int = 64, width: int = 96, fps: float = 8.0, **kw) -> Path:
        return write_video(tmp_path / name, moving_square_frames(num_frames, height, width, **kw), fps=fps)

    return _make


@pytest.fixture
def synth_root(tmp_path):
    """DATA_ROOT with a Synth_Zero_Shot_QA set: 5 questions over 3 videos, one question without a video."""
    from videopanda.data.video_writer import write_video

    qa = tmp_path / "data" / "eval" / "GPT_Zero_Shot_QA" / "Synth_Zero_Shot_QA"
    for k in range(3):
        write_video(qa / "videos" / f"clip{k}.mp4", moving_square_frames(8, 48, 64, seed=k), fps=4.0)
    names = ["clip0", "clip1", "clip2", "clip0", "gone"]
    answers = ["red", "two", "a man", "left", "blue"]
    (qa / "test_q.json").write_text(json.dumps(
        [{"video_name": n, "question": f"what about {n}, take {i}?", "question_id": f"q{i}"}
         for i, n in enumerate(names)]))
    (qa / "test_a.json").write_text(json.dumps(
        [{"answer": a, "type": "t", "question_id": f"q{i}"} for i, a in enumerate(answers)]))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def smollm2_converted() -> Path:
    """SmolLM2's converted copy in the test cache, made by one pytest-xdist worker while the others wait (the
    cache is safe under concurrent converters, but each would spend the 10-40 s conversion)."""
    from videopanda.model.llm import find_smollm2_gguf
    from videopanda.model.smollm2_cache import cached_model_dir, default_cache_dir

    root = default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".tests-convert.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return cached_model_dir(find_smollm2_gguf())


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_converted):
    """The embedded SmolLM2 tokenizer with the <image> placeholder token."""
    from videopanda.model.llm import load_tokenizer

    return load_tokenizer("smollm2")


def small_videopanda_config(tokenizer, **overrides):
    """A VideoPandaConfig with 112x112 frames (teacher 56) around a tiny LLaMA sized for ``tokenizer``."""
    from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig

    params = dict(stab_hidden_size=32, image_size=112, teacher_image_size=56,
                  image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    params.update(overrides)
    text = tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return VideoPandaConfig(text_config=text, **params)


class ScriptedOpenAIServer:
    """A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions wire format from a script.

    ``script(body, n)`` gets the n-th request's JSON body (n from 0) and returns
    ``("ok", text)``, ``("status", code)``, ``("garbage", text)`` (a 200 that is not
    JSON) or ``("hang", seconds)``; every request is recorded in ``requests``.
    """

    def __init__(self, script) -> None:
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    n = len(outer.requests)
                    outer.requests.append(body)
                kind, value = script(body, n)
                if kind == "hang":
                    time.sleep(value)
                    return
                if kind == "status":
                    payload, code = json.dumps({"error": {"message": f"scripted {value}"}}).encode(), value
                elif kind == "garbage":
                    payload, code = value.encode(), 200
                else:
                    payload, code = json.dumps({
                        "id": f"x{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": value}}],
                    }).encode(), 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted_openai_server():
    """Factory: ``server = scripted_openai_server(script)``; servers are closed after the test."""
    servers = []

    def _make(script) -> ScriptedOpenAIServer:
        servers.append(ScriptedOpenAIServer(script))
        return servers[-1]

    yield _make
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def tiny_videopanda_dir(tmp_path_factory, smollm2_tokenizer):
    """A saved tiny random Video-Panda model directory (save_pretrained + processor files, as training writes it)."""
    import torch

    from videopanda.data.processing_videopanda import save_model_processor
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

    torch.manual_seed(0)
    model = VideoPandaForCausalLM(small_videopanda_config(smollm2_tokenizer))
    path = tmp_path_factory.mktemp("model") / "tiny-panda"
    model.save_pretrained(path)
    save_model_processor(path, smollm2_tokenizer, model.config)
    return path


# The reduced quickstart: one or two steps per stage (4 in all) on 3 training videos, 3 held-out videos.
REDUCED_QUICKSTART = ("--steps-scale", "0.01", "--num-test", "3")


@pytest.fixture(scope="session")
def quickstart_dir(tmp_path_factory, precision, smollm2_converted) -> Path:
    """A reduced quickstart run through the CLI: the one trained model every test that needs one shares."""
    from videopanda.cli import main

    out = tmp_path_factory.mktemp("quickstart")
    argv = ["quickstart", "--out", str(out), *REDUCED_QUICKSTART, "--judge-items", "1", "--dtype", precision]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def held_out(quickstart_dir) -> list[tuple[str, Path, str]]:
    """[(id, video path, question)] of the reduced quickstart's held-out set."""
    from videopanda.data.decode import find_video_file
    from videopanda.data.synth import QA_DIR

    qa = quickstart_dir / "data" / QA_DIR
    return [(str(q["question_id"]), find_video_file(qa / "videos", q["video_name"]), q["question"])
            for q in json.loads((qa / "test_q.json").read_text())]


# Largest top-2 logit margin that batched and single-prompt generation may resolve differently: left padding
# changes reduction order and shapes, so logits agree only to rounding (bf16 keeps ~3 significant digits).
NEAR_TIE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.05}


def assert_same_greedy_answer(predictor, visuals, question: str, answer: str) -> None:
    """``answer`` (another path's, e.g. batched) is the predictor's single-prompt greedy answer, or departs from
    it only at a step whose top-2 logits are within rounding of each other (a near-tie, not a bug)."""
    out = predictor.greedy_scores(visuals, question)
    tokens = out.sequences[0]
    alone = predictor.processor.decode(tokens)
    if alone == answer:
        return
    decode = predictor.processor.decode
    step = next((j for j in range(len(tokens)) if not answer.startswith(decode(tokens[: j + 1]))), len(tokens) - 1)
    top2 = out.scores[step][0].float().topk(2).values
    margin = float(top2[0] - top2[1])
    tie = NEAR_TIE[predictor.precision.dtype]
    assert margin < tie, (f"{answer!r} != single-prompt answer {alone!r}: they part at step {step}, where the "
                          f"top-2 logit margin {margin:.4f} is no near-tie (< {tie} in {predictor.precision.dtype})")
