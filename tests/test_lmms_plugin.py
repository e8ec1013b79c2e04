"""The `videopanda` model for lmms-eval (needs the `lmms` extra): registered by entry point, answers like our
predictor, scores continuations for real, and runs one of our tasks end to end through lmms-eval's CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import moving_square_frames
from test_lmms_tasks import synth_root  # noqa: F401  (a fixture)
from videopanda.cli import main
from videopanda.data.conversation import Turn
from videopanda.data.video_writer import write_video

lmms_eval = pytest.importorskip("lmms_eval", reason="the lmms extra (lmms-eval) is not installed")


@pytest.fixture(scope="module")
def lmm(tiny_videopanda_dir):
    from videopanda.lmms.model import VideoPandaLMM

    return VideoPandaLMM(pretrained=str(tiny_videopanda_dir), dtype="float32", batch_size=2, max_new_tokens=4)


class Request:
    """What lmms-eval hands a model: an Instance's ``args``."""

    def __init__(self, *args) -> None:
        self.args = args


def test_entry_point_registers_the_model():
    from lmms_eval.models import get_model

    from videopanda.lmms.model import VideoPandaLMM

    assert get_model("videopanda") is VideoPandaLMM


def test_generate_until_answers_as_our_predictor(lmm, tmp_path):
    videos = [write_video(tmp_path / f"v{k}.mp4", moving_square_frames(8, 48, 64, seed=k), fps=4.0) for k in range(3)]
    docs = [{"video": str(v), "question": f"what moves in {k}?"} for k, v in enumerate(videos)]
    lmm.task_dict = {"t": {"test": docs}}
    requests = [Request(d["question"], {"max_new_tokens": 3, "until": ["x"]}, lambda doc: [doc["video"]], k, "t",
                        "test") for k, d in enumerate(docs)]
    expected = lmm.predictor.answer([lmm.predictor.load_video(v) for v in videos], [d["question"] for d in docs],
                                    max_new_tokens=3)
    assert lmm.generate_until(requests) == expected


def test_loglikelihood_is_the_continuations_log_probability(lmm, tmp_path):
    import torch

    video = write_video(tmp_path / "v.mp4", moving_square_frames(8, 48, 64), fps=4.0)
    lmm.task_dict = {"t": {"test": [{"video": str(video)}]}}
    (logprob, greedy), = lmm.loglikelihood([Request("what moves?", " a red square", lambda d: [d["video"]], 0, "t",
                                                    "test")])
    # The model's own loss on the same sequence, labels only on the continuation.
    processor, model = lmm.predictor.processor, lmm.predictor.model
    prompt = processor.encode_prompt([Turn("user", "what moves?")], lmm.predictor.load_video(video))
    cont = torch.tensor(processor.tokenizer.encode(" a red square", add_special_tokens=False))
    ids = torch.cat([prompt.input_ids, cont])[None]
    labels = ids.clone()
    labels[0, : len(prompt.input_ids)] = -100
    with torch.no_grad():
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                     pixel_values=prompt.pixel_values, chunk_lengths=prompt.chunk_lengths).loss
    assert logprob == pytest.approx(-loss.item() * len(cont), rel=1e-4) and logprob < 0
    assert isinstance(greedy, bool)


@pytest.mark.slow
def test_lmms_eval_runs_our_task_end_to_end(synth_root, tiny_videopanda_dir, scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: ("ok", "{'pred': 'yes', 'score': 4}"))
    tasks_dir = tmp_path / "tasks"
    assert main(["eval", "lmms-tasks", "--data-root", str(synth_root), "--out", str(tasks_dir), "--base-url",
                 server.base_url, "--judge-model", "j"]) == 0
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "videopanda", "--model_args",
         f"pretrained={tiny_videopanda_dir},dtype=float32,num_frames=8,max_new_tokens=3", "--tasks",
         "videopanda_synthqa", "--include_path", str(tasks_dir), "--limit", "2", "--batch_size", "2",
         "--gen_kwargs", "max_new_tokens=3",  # the task asks for the release's 1024
         "--output_path", str(tmp_path / "out"), "--log_samples"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*_results.json")]
    assert results, run.stdout[-2000:]
    metrics = results[0]["results"]["videopanda_synthqa"]
    assert metrics["gpt_eval_accuracy,none"] == 100.0 and metrics["gpt_eval_score,none"] == 4.0
    assert 0.0 <= metrics["rule_accuracy,none"] <= 100.0
    samples = [line for p in (tmp_path / "out").rglob("*samples_videopanda_synthqa*.jsonl")
               for line in p.read_text().splitlines()]
    assert len(samples) == 2 and len(server.requests) == 2
