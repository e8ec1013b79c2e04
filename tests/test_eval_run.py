"""`eval run` on real video files with a tiny random Video-Panda: pairing, sharding, resume, missing videos,
and the run -> judge -> report chain through the CLI."""

from __future__ import annotations

import json
import random

import pytest

from conftest import moving_square_frames
from videopanda.cli import main
from videopanda.data.video_writer import write_video
from videopanda.eval.jsonl import read_jsonl
from videopanda.eval.judge.runner import read_metrics
from videopanda.eval.run import load_qa_pairs, merge_shards, run_shard, shard_files, shard_items
from videopanda.inference import GenerationConfig, VideoPandaPredictor

VIDEOS = {"clip0": ".mp4", "clip1": ".avi", "clip2": ".gif", "v_clip3": ".webm", "clip4": ".mkv"}


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_videopanda_dir):
    return tiny_videopanda_dir


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return VideoPandaPredictor.from_pretrained(tiny_model_dir, GenerationConfig(max_new_tokens=4, batch_size=2))


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory):
    """test_q.json / test_a.json (answers shuffled) over real videos, one missing and one corrupt."""
    root = tmp_path_factory.mktemp("qa")
    videos = root / "videos"
    for k, (name, ext) in enumerate(VIDEOS.items()):
        write_video(videos / f"{name}{ext}", moving_square_frames(12, 48, 64, seed=k), fps=4.0)
    (videos / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    names = ["clip0", "clip1", "clip2", "clip3", "clip4", "clip0", "gone", "broken"]  # ActivityNet id without v_
    questions = [{"video_name": n, "question": f"what happens in {n}, take {i}?", "question_id": f"q{i}"}
                 for i, n in enumerate(names)]
    answers = [{"answer": f"answer {i}", "type": "t", "question_id": f"q{i}"} for i in range(len(names))]
    random.Random(0).shuffle(answers)
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(json.dumps(answers))
    return root


def test_questions_and_answers_pair_by_id(qa_set, tmp_path):
    pairs = load_qa_pairs(qa_set / "test_q.json", qa_set / "test_a.json")
    assert [(p.id, p.answer) for p in pairs] == [(f"q{i}", f"answer {i}") for i in range(8)]
    answers = json.loads((qa_set / "test_a.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps([a for a in answers if a["question_id"] != "q3"]))
    with pytest.raises(ValueError, match="q3"):
        load_qa_pairs(qa_set / "test_q.json", tmp_path / "a.json")


def test_shards_partition_the_questions(qa_set):
    pairs = load_qa_pairs(qa_set / "test_q.json", qa_set / "test_a.json")
    shards = [shard_items(pairs, 3, i) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 2] and sum(shards, []) == pairs


def test_sharded_run_plus_merge_equals_unsharded(qa_set, predictor, tmp_path):
    pairs = load_qa_pairs(qa_set / "test_q.json", qa_set / "test_a.json")
    whole = run_shard(pairs, qa_set / "videos", predictor, tmp_path / "whole")
    merge_shards(tmp_path / "whole", pairs, 1)
    for i in range(3):
        run_shard(pairs, qa_set / "videos", predictor, tmp_path / "sharded", num_shards=3, shard_id=i)
    counts = merge_shards(tmp_path / "sharded", pairs, 3)
    merged = read_jsonl(tmp_path / "whole" / "merge.jsonl")
    assert read_jsonl(tmp_path / "sharded" / "merge.jsonl") == merged
    assert counts == {"questions": 8, "predicted": 6, "missing": 2, "unanswered": 0}
    assert (whole.answered, whole.missing) == (6, 2)
    assert [r["id"] for r in merged] == ["q0", "q1", "q2", "q3", "q4", "q5"]  # v_clip3 found for 'clip3'
    assert all(set(r) == {"id", "question", "answer", "pred"} and isinstance(r["pred"], str) for r in merged)
    assert merged[1]["answer"] == "answer 1"
    missing = read_jsonl(tmp_path / "sharded" / "missing.jsonl")
    assert [(m["id"], m["video_name"]) for m in missing] == [("q6", "gone"), ("q7", "broken")]
    assert "no video file" in missing[0]["reason"] and "unreadable" in missing[1]["reason"]


class CountingPredictor:
    """The real predictor, counting the questions it is asked."""

    def __init__(self, inner: VideoPandaPredictor) -> None:
        self.inner, self.batch_size, self.asked = inner, inner.batch_size, []

    def load_video(self, path):
        return self.inner.load_video(path)

    def answer(self, visuals, questions):
        self.asked += list(questions)
        return self.inner.answer(visuals, questions)


def test_interrupted_run_resumes_without_repeating(qa_set, predictor, tmp_path):
    pairs = load_qa_pairs(qa_set / "test_q.json", qa_set / "test_a.json")
    counting = CountingPredictor(predictor)
    run_shard(pairs[:3], qa_set / "videos", counting, tmp_path)  # "killed" after three questions ...
    pred_path, _ = shard_files(tmp_path, 1, 0)
    with pred_path.open("a") as f:
        f.write('{"id": "q3", "quest')  # ... in the middle of writing the fourth
    counting.asked.clear()
    summary = run_shard(pairs, qa_set / "videos", counting, tmp_path)
    assert counting.asked == [pairs[i].question for i in (3, 4, 5)]
    assert (summary.new, summary.answered, summary.missing) == (3, 6, 2)
    assert [r["id"] for r in read_jsonl(pred_path)] == ["q0", "q1", "q2", "q3", "q4", "q5"]


def test_run_judge_report_through_the_cli(qa_set, tiny_model_dir, tmp_path, scripted_openai_server):
    out = tmp_path / "MSVD" / "tiny-panda"
    source = ["--questions", str(qa_set / "test_q.json"), "--answers", str(qa_set / "test_a.json"),
              "--video-dir", str(qa_set / "videos")]
    # Two of eight videos are missing or unreadable: a partial result, so exit 1 (the answers are kept).
    assert main(["eval", "run", str(tiny_model_dir), *source, "--output-dir", str(out), "--max-new-tokens", "3"]) == 1
    merged = read_jsonl(out / "merge.jsonl")
    assert len(merged) == 6 and len(read_jsonl(out / "missing.jsonl")) == 2

    assert main(["eval", "judge", str(out / "merge.jsonl"), "--backend", "rule", "--output-dir", str(out / "rule"),
                 "--benchmark-name", "MSVD"]) == 0
    rule = read_metrics(out / "rule")
    assert (rule["benchmark"], rule["model"], rule["judged"]) == ("MSVD", "tiny-panda", 6)  # model: run_settings.json
    assert rule["judge"]["backend"] == "rule"
    # Coverage from missing.jsonl: 6 of 8 answered; unanswered questions count as wrong over the whole benchmark.
    assert (rule["answered"], rule["questions"], rule["unanswered"]) == (6, 8, 2)
    assert rule["accuracy_all_benchmark"] == rule["yes"] / 8
    assert rule["accuracy_benchmark"] == rule["yes"] / (rule["yes"] + rule["no"] + 2)

    server = scripted_openai_server(lambda body, n: ("ok", "{'pred': 'yes', 'score': 5}" if n % 3 else "oops"))
    assert main(["eval", "judge", str(out / "merge.jsonl"), "--backend", "openai", "--base-url", server.base_url,
                 "--judge-model", "j1", "--workers", "1", "--output-dir", str(out / "gpt"),
                 "--benchmark-name", "MSVD"]) == 0
    judged = read_metrics(out / "gpt")
    assert judged["judged"] + judged["failures"] == 6 and judged["yes"] == judged["judged"]
    assert judged["judge"]["model"] == "j1" and judged["judge"]["prompt_hash"]

    assert main(["eval", "report", str(out / "rule"), str(out / "gpt"), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| MSVD |" in table and "tiny-panda" in table and "rule:rule-match-v1@" in table and "openai:j1@" in table
    assert (tmp_path / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "report" / "report.csv").read_text().splitlines()) == 3
    coverage = [line for line in table.splitlines() if line.startswith("| MSVD | tiny-panda | 6 / 8 |")]
    assert len(coverage) == 2  # one line per judge, each stating the coverage
    # An existing report is not overwritten silently.
    assert main(["eval", "report", str(out / "rule"), "--out", str(tmp_path / "report")]) == 1
    assert main(["eval", "report", str(out / "rule"), "--out", str(tmp_path / "report"), "--overwrite"]) == 0
    assert len((tmp_path / "report" / "report.csv").read_text().splitlines()) == 2


def test_five_criteria_answer_and_judge(qa_set, tiny_model_dir, tmp_path, scripted_openai_server):
    data = tmp_path / "bench"
    data.mkdir()
    (data / "videos").symlink_to(qa_set / "videos")
    (data / "generic_qa.json").write_text(json.dumps([{"video_name": "clip0", "Q": "what?", "A": "a square"},
                                                      {"video_name": "clip0", "Q": "where?", "A": "left"}]))
    (data / "temporal_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q": "then?", "A": "it moves"}]))
    (data / "consistency_qa.json").write_text(json.dumps([{"video_name": "clip2", "Q1": "what moves?",
                                                          "Q2": "which thing moves?", "A": "a square"}]))
    server = scripted_openai_server(lambda body, n: ("ok", "{'score': 3}"))
    assert main(["eval", "five-criteria", "--data-dir", str(data), "--output-dir", str(tmp_path / "out"),
                 "--model-dir", str(tiny_model_dir), "--max-new-tokens", "2", "--backend", "openai",
                 "--base-url", server.base_url, "--workers", "1"]) == 0
    assert len(server.requests) == 3 * 2 + 1 + 1  # three generic criteria x 2, temporal, consistency
    consistency = [r for r in server.requests if "Question 2: which thing moves?" in r["messages"][1]["content"]]
    assert len(consistency) == 1
    for criterion in ("correctness", "detail", "context", "temporal", "consistency"):
        results = read_metrics(tmp_path / "out" / f"judge_{criterion}")
        assert results["mean_score"] == 3.0 and results["judge"]["prompt"] == criterion
    assert sorted(p.name for p in (tmp_path / "out" / "judge_correctness").glob("*.json")) == [
        "clip0_0.json", "clip0_1.json"]


def test_benchmarks_by_name_follow_the_release_layout(tmp_path):
    from videopanda.eval.benchmarks import get_benchmark

    q, a, videos = get_benchmark("activitynet").paths(tmp_path)
    root = tmp_path / "eval" / "GPT_Zero_Shot_QA" / "Activitynet_Zero_Shot_QA"
    assert (q, a, videos) == (root / "test_q.json", root / "test_a.json", root / "videos")
    assert get_benchmark("MSRVTT").paths(tmp_path)[0].parent.name == "MSRVTT_Zero_Shot_QA"
    with pytest.raises(ValueError, match="known: MSVD"):
        get_benchmark("kinetics")


def test_synthetic_benchmark_by_name_run_judge_report(tiny_model_dir, tmp_path):
    from videopanda.data.synth import SynthConfig, synthesize

    synthesize(tmp_path / "data", SynthConfig(num_train=1, num_test=2))
    assert main(["eval", "run", str(tiny_model_dir), "--benchmark", "synth", "--data-root", str(tmp_path / "data"),
                 "--max-new-tokens", "2", "--max-samples", "3"]) == 0
    out = tmp_path / "data" / "eval" / "GPT_Zero_Shot_QA" / "Synth_Zero_Shot_QA" / "tiny-panda"
    test_q = json.loads((out.parent / "test_q.json").read_text())
    assert [r["id"] for r in read_jsonl(out / "merge.jsonl")] == [str(q["question_id"]) for q in test_q[:3]]
    assert main(["eval", "judge", str(out / "merge.jsonl"), "--backend", "rule"]) == 0
    results = read_metrics(out / "judge_rule")
    assert (results["benchmark"], results["model"], results["total"]) == ("Synth", "tiny-panda", 3)
    assert main(["eval", "report", str(out / "judge_rule"), "--out", str(tmp_path / "report")]) == 0
    assert "| Synth |" in (tmp_path / "report" / "report.md").read_text()
