"""The field's video benchmarks through lmms-eval's own CLI, offline: local replicas of Video-MME, MVBench
(a video subtask and the frame-list episodic_reasoning), TempCompass and EgoSchema's option-likelihood
(mcppl) task. Each replica IS lmms-eval's task YAML (``include:`` of the installed file: its prompts,
generation settings, ``doc_to_visual``, ``process_results`` and aggregation) with only the questions
swapped for a local JSON file; the videos are synthetic, where the task's own ``doc_to_visual`` looks
for them under ``HF_HOME``. All replicas run in ONE ``videopanda eval lmms`` (lmms-eval's CLI as a
subprocess: its start is the slow part)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import moving_square_frames
from videopanda.data.video_writer import write_video
from videopanda.eval.jsonl import write_jsonl

lmms_eval = pytest.importorskip("lmms_eval", reason="the lmms extra (lmms-eval) is not installed")

TASKS_ROOT = Path(lmms_eval.__file__).parent / "tasks"
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
EGO_OPTIONS = ["a red square moves", "nothing happens", "a dog barks twice", "two people talk", "the camera pans"]
# name -> (the lmms-eval task YAML it includes, the split the task reads, extra YAML lines)
REPLICAS = {
    "replica_videomme": ("videomme/videomme.yaml", "test", ""),
    "replica_mvbench_action_antonym": ("mvbench/mvbench_action_antonym.yaml", "train", ""),
    "replica_mvbench_episodic_reasoning": (  # the frame-folder subtask, as lmms-eval's frames variant reads it
        "mvbench/mvbench_episodic_reasoning.yaml", "train",
        "doc_to_visual: !function utils.mvbench_frames_doc_to_visual\n"),
    "replica_tempcompass_multi_choice": ("tempcompass/tempcompass_mc.yaml", "test", ""),
    "replica_egoschema_subset_mcppl": ("egoschema/egoschema_subset_mcppl.yaml", "test", ""),
}
TASKS_ASKED = ["replica_videomme", "replica_mvbench", "replica_tempcompass_multi_choice",
               "replica_egoschema_subset_mcppl"]
UTILS = "from lmms_eval.tasks.mvbench.utils import mvbench_frames_doc_to_visual  # noqa: F401\n"


def _video(path: Path, k: int) -> Path:
    return write_video(path, moving_square_frames(16, 48, 64, color=COLORS[k % 4], seed=k), fps=4.0)


def _docs(hf: Path) -> dict[str, list[dict]]:
    """Each task's questions in its dataset's own fields, the videos where its doc_to_visual looks."""
    letters = "ABCD"
    videomme = []
    for k in range(3):
        _video(hf / "videomme" / "data" / f"vmm{k}.mp4", k)
        videomme.append({"videoID": f"vmm{k}", "question_id": f"{k:03d}-1", "duration": "short",
                         "domain": "Knowledge", "sub_category": "Humanity & History",
                         "task_type": "Temporal Perception", "question": "What colour is the moving square?",
                         "options": [f"{letters[i]}. {c}" for i, c in enumerate(["red", "green", "blue", "yellow"])],
                         "answer": letters[k % 4]})
    antonym = []
    for k in range(2):
        _video(hf / "mvbench_video" / "ssv2_video_mp4" / f"ssv2_{k}.mp4", k)
        antonym.append({"video": f"ssv2_{k}.mp4", "question": "What is the square doing?",
                        "candidates": ["moving", "resting", "not sure"], "answer": "moving"})
    episodic = []
    from PIL import Image

    for k in range(2):
        clip = hf / "mvbench_video" / "tvqa" / "video_fps3_hq_segment" / f"s01e0{k}_clip"
        clip.mkdir(parents=True)
        for i, frame in enumerate(moving_square_frames(16, 48, 64, color=COLORS[k], seed=k)):  # 16 > 8 frames
            Image.fromarray(frame).save(clip / f"{i:05d}.jpg")
        episodic.append({"video": clip.name, "question": "Who speaks first?",
                         "candidates": ["the square", "nobody", "a dog"], "answer": "the square"})
    tempcompass = []
    for k in range(2):
        _video(hf / "tempcompass" / "videos" / f"tc{k}.mp4", k)
        tempcompass.append({"video_id": f"tc{k}", "dim": "direction",
                            "question": "Which way does the square move?\nA. left\nB. right\nC. up\nD. down",
                            "answer": "B. right"})
    egoschema = []
    for k in range(4):
        _video(hf / "egoschema" / "videos" / f"ego{k}.mp4", k)
        egoschema.append({"video_idx": f"ego{k}", "question": "What happens in the video?",
                          "option": [f"{'ABCDE'[i]}. {o}" for i, o in enumerate(EGO_OPTIONS)], "answer": str(k)})
    return {"replica_videomme": videomme, "replica_mvbench_action_antonym": antonym,
            "replica_mvbench_episodic_reasoning": episodic, "replica_tempcompass_multi_choice": tempcompass,
            "replica_egoschema_subset_mcppl": egoschema}


def _tasks_dir(out: Path, docs: dict[str, list[dict]]) -> Path:
    (out / "docs").mkdir(parents=True)
    (out / "utils.py").write_text(UTILS)
    (out / "replica_mvbench.yaml").write_text(  # a group, as lmms-eval's `mvbench` is one
        "group: replica_mvbench\ntask:\n  - replica_mvbench_action_antonym\n  - replica_mvbench_episodic_reasoning\n")
    for name, (stock, split, extra) in REPLICAS.items():
        write_jsonl(out / "docs" / f"{name}.jsonl", docs[name])
        (out / f"{name}.yaml").write_text(
            f"include: {TASKS_ROOT / stock}\ntask: {name}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    {split}: {out / 'docs' / f'{name}.jsonl'}\n{extra}")
    return out


@pytest.fixture(scope="module")
def replica_run(tmp_path_factory, tiny_videopanda_dir, precision):
    """One `videopanda eval lmms` over every replica; TempCompass's judge fallback is a local scripted server."""
    from conftest import ScriptedOpenAIServer

    root = tmp_path_factory.mktemp("replicas")
    docs = _docs(root / "hf")
    tasks = _tasks_dir(root / "tasks", docs)
    judge = ScriptedOpenAIServer(lambda body, n: ("ok", "Incorrect"))
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OPENAI_API_URL": f"{judge.base_url}/chat/completions", "OPENAI_API_KEY": "none",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-m", "videopanda", "eval", "lmms", "--", "--model", "videopanda", "--model_args",
         f"pretrained={tiny_videopanda_dir},dtype={precision},max_new_tokens=8", "--tasks", ",".join(TASKS_ASKED),
         "--include_path", str(tasks), "--batch_size", "2", "--output_path", str(root / "out"), "--log_samples"],
        capture_output=True, text=True, env=env, timeout=900, cwd=root,
    )
    judge.close()
    samples = {name: [json.loads(line) for p in (root / "out").rglob(f"*samples_{name}.jsonl")
                      for line in p.read_text().splitlines()] for name in REPLICAS}
    results = [json.loads(p.read_text()) for p in (root / "out").rglob("*_results.json")]
    return run, results[0] if results else None, samples, docs, root / "hf", judge


@pytest.mark.slow
def test_every_replica_runs_end_to_end_through_lmms_eval(replica_run):
    run, results, samples, docs, _, judge = replica_run
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert results is not None
    for name, task_docs in docs.items():
        assert results["n-samples"][name]["effective"] == len(task_docs), name
        assert len(samples[name]) == len(task_docs), name
    videomme = results["results"]["replica_videomme"]["videomme_perception_score,none"]
    scores = [s["videomme_perception_score"]["score"] for s in samples["replica_videomme"]]
    assert videomme == pytest.approx(100 * sum(scores) / len(scores))  # lmms-eval's own scoring of our answers
    for name in ("replica_mvbench_action_antonym", "replica_mvbench_episodic_reasoning"):
        assert 0 <= results["results"][name]["mvbench_accuracy,none"] <= 100
    unmatched = [s for s in samples["replica_tempcompass_multi_choice"] if not s["avg_accuracy"]["match_success"]]
    assert len(judge.requests) == len(unmatched)  # answers its rules cannot read went to its (local) LLM judge


@pytest.mark.slow
def test_option_likelihood_task_picks_the_models_likeliest_option(replica_run, tiny_videopanda_dir, precision):
    """EgoSchema's mcppl task, through lmms-eval's evaluator, chooses the argmax of the model's own mean
    log-probability of each option as its reply (computed here from the model, one option at a time)."""
    from videopanda.data.conversation import Turn
    from videopanda.inference import GenerationConfig, VideoPandaPredictor

    run, results, samples, docs, hf, _ = replica_run
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    predictor = VideoPandaPredictor.from_pretrained(tiny_videopanda_dir, GenerationConfig(), "cpu", precision)
    processor, model = predictor.processor, predictor.model
    dtype = str(model.dtype).removeprefix("torch.")
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    chosen, likeliest = [], []
    for sample in sorted(samples["replica_egoschema_subset_mcppl"], key=lambda s: s["doc_id"]):
        doc = docs["replica_egoschema_subset_mcppl"][sample["doc_id"]]
        prompt = processor.encode_prompt([Turn("user", doc["question"])],
                                         predictor.load_video(hf / "egoschema" / "videos" / f"{doc['video_idx']}.mp4"))
        logprobs = []
        for option in EGO_OPTIONS:
            reply = torch.tensor(processor.tokenizer.encode(f" {option}{processor.stop_string}",
                                                            add_special_tokens=False))
            ids = torch.cat([prompt.input_ids, reply])[None]
            labels = ids.clone()
            labels[0, : len(prompt.input_ids)] = -100
            with torch.no_grad():
                loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                             pixel_values_videos=prompt.pixel_values_videos.to(model.dtype),
                             video_grid_thw=prompt.video_grid_thw).loss
            logprobs.append(-loss.item())
        reported = [float(loss) for loss, _ in sample["filtered_resps"]]  # what the plugin handed lmms-eval
        assert reported == pytest.approx([-lp for lp in logprobs], rel=tolerance)  # mean NLL: lower is likelier
        pick = sample["score"]["pred"]
        assert max(logprobs) - logprobs[pick] <= tolerance, (pick, logprobs)  # the argmax, up to rounding ties
        chosen.append(pick)
        likeliest.append(int(np.argmax(logprobs)))
    accuracy = results["results"]["replica_egoschema_subset_mcppl"]["score,none"]
    gold = [int(d["answer"]) for d in docs["replica_egoschema_subset_mcppl"]]
    assert accuracy == pytest.approx(np.mean([c == g for c, g in zip(chosen, gold, strict=True)]))
    if dtype == "float32":
        assert chosen == likeliest


def _results_file(out: Path, results: dict) -> Path:
    path = out / "model" / "20260101_000000_results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results))
    return path


def test_eval_lmms_needs_the_options_that_tell_a_failed_run(capsys):
    from videopanda.cli import main

    assert main(["eval", "lmms", "--", "--model", "videopanda", "--tasks", "videomme"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --tasks and --output_path" in err[0]


def test_results_check_names_what_a_run_left_out(tmp_path):
    from videopanda.lmms.run_check import LmmsRunError, check_results

    with pytest.raises(LmmsRunError, match="wrote no results"):
        check_results(tmp_path, ["a"])
    _results_file(tmp_path, {"results": {"a": {"alias": "a", "acc,none": 50.0, "acc_stderr,none": "N/A"},
                                         "b": {"alias": "b", "acc,none": None}},
                             "n-samples": {"a": {"original": 2, "effective": 2}, "b": {"original": 0, "effective": 0}}})
    assert check_results(tmp_path, ["a"])["results"]["a"]["acc,none"] == 50.0
    with pytest.raises(LmmsRunError, match="no results for task c"):
        check_results(tmp_path, ["a", "c"])
    with pytest.raises(LmmsRunError, match="task b scored no documents; task b has no value for acc,none"):
        check_results(tmp_path, ["b"])
    (tmp_path / "model").joinpath("20260101_000001_results.json").write_text(json.dumps({
        "results": {"a": {"acc,none": 1.0}}, "n-samples": {"a": {"effective": 1}},
        "group_subtasks": {"g": ["a", "c"], "a": [], "c": []}}))
    with pytest.raises(LmmsRunError, match="no results for task c"):  # a group stands for its subtasks
        check_results(tmp_path, ["g"])
    with pytest.raises(LmmsRunError, match="wrote no results"):  # an older run's file is not this run's
        check_results(tmp_path, ["a"], since=time.time() + 60)


@pytest.mark.slow
def test_eval_lmms_exits_non_zero_where_lmms_eval_exits_zero_after_a_failed_run(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "videopanda", "eval", "lmms", "--", "--model", "videopanda", "--model_args",
         f"pretrained={tmp_path / 'no-model'}", "--tasks", "replica_videomme", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                                              "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        timeout=600, cwd=tmp_path,
    )
    assert "Error during evaluation" in run.stdout + run.stderr  # lmms-eval's own report of the failure ...
    assert run.returncode == 1  # ... after which it exited 0: the wrapper only reads results when it did
    assert "lmms-eval wrote no results under" in run.stderr.strip().splitlines()[-1]
