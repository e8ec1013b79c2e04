"""Our lmms-eval QA tasks (no lmms-eval needed): `eval lmms-tasks` writes them, their metrics equal `eval judge`'s."""

from __future__ import annotations

import importlib.util

import pytest

from videopanda.cli import main
from videopanda.eval.jsonl import read_jsonl, write_jsonl
from videopanda.eval.judge.runner import read_metrics


def judge_script(body, n):
    """A deterministic judge: yes when the answer appears in the prediction, scores varying by prediction."""
    user = body["messages"][1]["content"]
    answer = user.split("Correct Answer: ")[1].split("\n")[0]
    pred = user.split("Predicted Answer: ")[1].split("\n")[0]
    if "garbage" in pred:
        return "ok", "no dictionary here"
    return "ok", f"{{'pred': '{'yes' if answer in pred else 'no'}', 'score': {len(pred) % 6}}}"


def load_task_utils(tasks_dir):
    spec = importlib.util.spec_from_file_location("videopanda_task_utils", tasks_dir / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_metrics_equal_eval_judge(synth_root, scripted_openai_server, tmp_path, capsys):
    server = scripted_openai_server(judge_script)
    assert main(["eval", "lmms-tasks", "--data-root", str(synth_root), "--base-url", server.base_url,
                 "--judge-model", "j"]) == 0
    tasks_dir = synth_root / "eval" / "lmms_tasks"
    assert capsys.readouterr().out.strip() == str(tasks_dir)
    assert (tasks_dir / "videopanda_synthqa.yaml").is_file() and (tasks_dir / "_videopanda_qa_yaml").is_file()
    docs = read_jsonl(tasks_dir / "docs" / "Synth.jsonl")
    assert [d["question_id"] for d in docs] == ["q0", "q1", "q2", "q3"]
    assert [m["id"] for m in read_jsonl(tasks_dir / "docs" / "Synth.missing.jsonl")] == ["q4"]

    preds = ["it is red", "2 of them", "a woman", "garbage"]
    predictions = [{"id": d["question_id"], "question": d["question"], "answer": d["answer"], "pred": p}
                   for d, p in zip(docs, preds, strict=True)]
    write_jsonl(tmp_path / "run" / "merge.jsonl", predictions)
    for backend in ("openai", "rule"):
        assert main(["eval", "judge", str(tmp_path / "run" / "merge.jsonl"), "--backend", backend, "--base-url",
                     server.base_url, "--judge-model", "j", "--workers", "1", "--output-dir",
                     str(tmp_path / backend), "--benchmark-name", "Synth", "--model-name", "m"]) == (
            1 if backend == "openai" else 0)  # exit 1: one item the judge answered with garbage
    judged, rule = read_metrics(tmp_path / "openai"), read_metrics(tmp_path / "rule")
    assert judged["failures"] == 1 and 0 < judged["yes"] < judged["judged"]  # the set exercises every case

    utils = load_task_utils(tasks_dir)
    assert utils.doc_to_text(docs[0]) == docs[0]["question"] and utils.doc_to_visual(docs[0]) == [docs[0]["video"]]
    records = [utils.process_results(d, [p]) for d, p in zip(docs, preds, strict=True)]
    by_metric = {m: [r[m] for r in records] for m in records[0]}
    assert utils.aggregate_accuracy(by_metric["gpt_eval_accuracy"], None) == pytest.approx(100 * judged["accuracy"])
    assert utils.aggregate_accuracy_all(by_metric["gpt_eval_accuracy_all"], None) == pytest.approx(
        100 * judged["accuracy_all"])
    assert utils.aggregate_score(by_metric["gpt_eval_score"], None) == pytest.approx(judged["mean_score"])
    assert utils.aggregate_rule_accuracy(by_metric["rule_accuracy"], None) == pytest.approx(100 * rule["accuracy"])
    sent = [r for r in server.requests if "Predicted Answer: it is red" in r["messages"][1]["content"]]
    assert sent[0]["messages"] == sent[-1]["messages"] and sent[-1]["model"] == "j"  # one prompt, both paths
