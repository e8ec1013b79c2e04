"""The `videopanda` model for lmms-eval (needs the `lmms` extra): registered by entry point, answers like our
predictor, scores continuations for real, and runs one of our tasks end to end through lmms-eval's CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import moving_square_frames
from videopanda.cli import main
from videopanda.data.conversation import Turn
from videopanda.data.video_writer import write_video

lmms_eval = pytest.importorskip("lmms_eval", reason="the lmms extra (lmms-eval) is not installed")


@pytest.fixture(scope="module")
def lmm(tiny_videopanda_dir, precision):
    from videopanda.lmms.model import VideoPandaLMM

    return VideoPandaLMM(pretrained=str(tiny_videopanda_dir), dtype=precision, batch_size=2, max_new_tokens=4)


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
    requests = [Request(d["question"], {"max_new_tokens": 3}, lambda doc: [doc["video"]], k, "t", "test")
                for k, d in enumerate(docs)]
    visuals, questions = [lmm.predictor.load_video(v) for v in videos], [d["question"] for d in docs]
    expected = [answer for start in (0, 2)  # the plugin's batches of batch_size=2
                for answer in lmm.predictor.answer(visuals[start : start + 2], questions[start : start + 2],
                                                   max_new_tokens=3)]
    assert lmm.generate_until(requests) == expected


def test_generate_until_honours_each_requests_until_and_max_new_tokens(lmm, tmp_path):
    from videopanda.inference import GenerationRequest

    videos = [write_video(tmp_path / f"v{k}.mp4", moving_square_frames(8, 48, 64, seed=k), fps=4.0) for k in range(2)]
    docs = [{"video": str(v), "question": f"what moves in {k}?"} for k, v in enumerate(videos)]
    visuals = [lmm.predictor.load_video(v) for v in videos]
    # The same batch of two, unstopped: the reference the stopped answers must be cut from.
    full = lmm.predictor.generate([GenerationRequest(d["question"], v, max_new_tokens=8)
                                   for d, v in zip(docs, visuals, strict=True)])
    stop = next(c for c in full[0].text[1:] if not c.isspace())
    assert full[1].completion_tokens > 2, "the reference answer must be longer than the limit it is cut to"
    lmm.task_dict = {"t": {"test": docs}}
    requests = [Request(docs[0]["question"], {"max_new_tokens": 8, "until": [stop]}, lambda d: [d["video"]], 0, "t",
                        "test"),
                Request(docs[1]["question"], {"max_new_tokens": 2, "until": "never in the text"},
                        lambda d: [d["video"]], 1, "t", "test")]
    first, second = lmm.generate_until(requests)
    assert first == full[0].text[: full[0].text.index(stop, 1)].strip()
    assert full[1].text.startswith(second) and second != full[1].text


def test_frame_lists_are_sampled_to_the_models_frame_count(lmm, tmp_path):
    """A list of 16 frames for an 8-frame model: the release's rule keeps linspace(0, 15, 8) of them."""
    from PIL import Image

    from videopanda.lmms.visuals import request_visuals

    frames = moving_square_frames(16, 48, 64)  # (16, H, W, 3)
    predictor = lmm.predictor
    as_images = request_visuals([[Image.fromarray(f) for f in frames]], predictor)
    kept = [0, 2, 4, 6, 8, 10, 12, 15]
    assert as_images.num_real_frames == 8
    assert torch.equal(as_images.pixel_values, predictor.preprocess_video(frames[kept]).pixel_values)
    assert torch.equal(request_visuals(list(frames), predictor).pixel_values, as_images.pixel_values)  # arrays
    few = request_visuals(list(frames[:5]), predictor)  # fewer than the model takes: all, padded to a whole chunk
    assert few.num_real_frames == 5 and few.pixel_values.shape[0] == 8
    assert torch.equal(few.pixel_values[:5], predictor.preprocess_video(frames[:5]).pixel_values[:5])
    for i, frame in enumerate(frames):  # a frame folder (lmms-eval 0.7.3's MVBench episodic_reasoning), unpadded names
        Image.fromarray(frame).save(tmp_path / f"frame_{i}.png")
    assert torch.equal(request_visuals([str(tmp_path)], predictor).pixel_values, as_images.pixel_values)
    image = request_visuals([Image.fromarray(frames[3])], predictor)  # one image: an image input
    assert image.pixel_values.shape[0] == 1 and torch.equal(image.pixel_values,
                                                            predictor.preprocess_image(frames[3]).pixel_values)


def test_generate_until_takes_frame_lists_longer_than_the_model(lmm):
    from PIL import Image

    frames = [Image.fromarray(f) for f in moving_square_frames(16, 48, 64)]
    lmm.task_dict = {"t": {"test": [{"q": "what moves?"}]}}
    answer, = lmm.generate_until([Request("what moves?", {"max_new_tokens": 2}, lambda d: frames, 0, "t", "test")])
    assert isinstance(answer, str)


def test_loglikelihood_is_the_models_mean_loss_on_each_reply(lmm, tmp_path, precision):
    """lmms-eval's convention (its llava_vid/llava_onevision): (mean NLL of the reply, is_greedy), lower likelier;
    the options of a document are scored on one decoding of its video."""
    from lmms_eval.api.instance import unwrap_generation_output

    video = write_video(tmp_path / "v.mp4", moving_square_frames(8, 48, 64), fps=4.0)
    options = [" a red square", " blue", " two dogs"]
    calls = []

    def to_visual(doc):
        calls.append(doc["video"])
        return [doc["video"]]

    lmm.task_dict = {"t": {"test": [{"video": str(video)}, {"video": str(video)}]}}
    requests = [Request("what moves?", o, to_visual, d, "t", "test") for d in (0, 1) for o in options]
    scored = [unwrap_generation_output(r)[0] for r in lmm.loglikelihood(requests)]  # as lmms-eval's evaluator reads
    assert len(calls) == 2  # once per document, not once per option
    processor, model = lmm.predictor.processor, lmm.predictor.model
    assert processor.stop_string == "</s>"
    prompt = processor.encode_prompt([Turn("user", "what moves?")], lmm.predictor.load_video(video))
    for option, (loss, greedy) in zip(options * 2, scored, strict=True):
        # The model's own loss with labels on the reply and its end of turn, the way lmms-eval's models take it.
        reply = torch.tensor(processor.tokenizer.encode(f"{option}</s>", add_special_tokens=False))
        ids = torch.cat([prompt.input_ids, reply])[None]
        labels = ids.clone()
        labels[0, : len(prompt.input_ids)] = -100
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                             pixel_values_videos=prompt.pixel_values_videos,
                             video_grid_thw=prompt.video_grid_thw).loss.item()
        assert loss == pytest.approx(expected, rel=1e-4 if precision == "float32" else 2e-2) and loss > 0
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
