"""The release's judge files both ways: the release's combining rule over our judge directory, and our
``eval report`` / ``eval judge --resume-from`` over files written exactly as the release's script writes them."""

from __future__ import annotations

import ast
import csv
import json
import os
import re

import pytest

from videopanda.cli import main
from videopanda.eval.jsonl import read_jsonl, write_jsonl
from videopanda.eval.judge.base import LLMJudge, QAItem
from videopanda.eval.judge.openai_backend import OpenAIBackend, OpenAIJudgeConfig
from videopanda.eval.judge.prompts import QA
from videopanda.eval.judge.runner import read_metrics, run_judge

# Judge replies by item: integer and fractional scores, yes and no, one reply that never parses.
REPLIES = ["{'pred': 'yes', 'score': 5}", "{'pred': 'yes', 'score': 4.6}", "{'pred': 'no', 'score': 1}",
           "{'pred': 'no', 'score': 0}", "{'pred': 'yes', 'score': 3}", "not a dictionary"]


def release_combine(output_dir, output_json):
    """The release's ``eval_video_qa.py`` after its judge loop, step for step: combine every ``*.json`` of
    ``output_dir`` into ``output_json`` and compute its accuracy and average score."""
    combined_contents = {}
    for file_name in os.listdir(output_dir):
        if file_name.endswith(".json"):
            with open(os.path.join(output_dir, file_name)) as json_file:
                combined_contents[file_name[:-5]] = json.load(json_file)
    with open(output_json, "w") as json_file:
        json.dump(combined_contents, json_file)
    score_sum = count = yes_count = no_count = 0
    for result in combined_contents.values():
        try:
            count += 1
            score_sum += int(result[0]["score"])
            pred = result[0]["pred"]
            if "yes" in pred.lower():
                yes_count += 1
            elif "no" in pred.lower():
                no_count += 1
        except Exception:
            pass
    return yes_count / (yes_count + no_count), score_sum / count


def release_write_item(output_dir, key, reply, qa_set):
    """What the release's ``annotate`` does with one judge reply."""
    response_dict = ast.literal_eval(reply)
    with open(f"{output_dir}/{key}.json", "w") as f:
        json.dump([response_dict, qa_set], f)


def items(n):
    return [QAItem(f"v_{i}", f"what is shown in clip {i}?", f"thing {i}", f"maybe thing {i}") for i in range(n)]


def reply_for(body):
    user = body["messages"][1]["content"]
    return "ok", next(REPLIES[i] for i in range(len(REPLIES)) if f"clip {i}?" in user)


def test_release_rule_over_our_judge_dir_gives_our_numbers(scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: reply_for(body))
    judge = LLMJudge(OpenAIBackend(OpenAIJudgeConfig(model="j", base_url=server.base_url, max_attempts=1)))
    out = tmp_path / "judge"
    (out).mkdir()
    (out / "v_5.json").write_text("[]")  # an earlier run's verdict for the item that fails now
    results = run_judge(items(6), out, judge, QA, workers=2, release_json=tmp_path / "results.json")
    assert (results["judged"], results["failures"]) == (5, 1)
    ours_combined = json.loads((tmp_path / "results.json").read_text())

    accuracy, average = release_combine(out, tmp_path / "release_results.json")
    assert accuracy == pytest.approx(results["accuracy"]) == pytest.approx(3 / 5)
    assert average == pytest.approx(results["mean_score_truncated"]) == pytest.approx((5 + 4 + 1 + 0 + 3) / 5)
    assert results["mean_score"] == pytest.approx((5 + 4.6 + 1 + 0 + 3) / 5)
    assert json.loads((tmp_path / "release_results.json").read_text()) == ours_combined
    assert read_metrics(out) == results

    # Byte for byte what the release writes for the same replies.
    for i, item in enumerate(items(5)):
        release_write_item(tmp_path, "expected", REPLIES[i], {"q": item.question, "a": item.answer, "pred": item.pred})
        assert (out / f"{item.id}.json").read_bytes() == (tmp_path / "expected.json").read_bytes()


@pytest.fixture
def release_run(tmp_path):
    """A release judge run on disk: ``MSVD_Zero_Shot_QA/model-x/{merge.jsonl, gpt3/<id>.json, results.json}``."""
    run = tmp_path / "MSVD_Zero_Shot_QA" / "model-x"
    (run / "gpt3").mkdir(parents=True)
    replies = ["{'pred': 'yes', 'score': 5}", "{'pred': 'Yes', 'score': 4.8}", "{'pred': 'no', 'score': 2}",
               "{'pred': 'yes', 'score': '3'}", "{'pred': 'yes'}"]  # the last: a reply without a score
    predictions = [{"id": it.id, "question": it.question, "answer": it.answer, "pred": it.pred} for it in items(6)]
    write_jsonl(run / "merge.jsonl", predictions)
    for record, reply in zip(predictions, replies, strict=False):  # the sixth item was never judged
        release_write_item(run / "gpt3", record["id"], reply,
                           {"q": record["question"], "a": record["answer"], "pred": record["pred"]})
    accuracy, average = release_combine(run / "gpt3", run / "results.json")
    return run, accuracy, average


def test_report_reads_the_release_dir_and_combined_file(release_run, tmp_path):
    run, accuracy, average = release_run
    assert main(["eval", "report", str(run / "gpt3"), str(run / "results.json"), "--out", str(tmp_path / "r")]) == 0
    rows = list(csv.DictReader((tmp_path / "r" / "report.csv").open()))
    assert len(rows) == 2
    for row in rows:
        assert (row["benchmark"], row["model"], row["source"]) == ("MSVD_Zero_Shot_QA", "model-x", "release")
        assert float(row["accuracy"]) == pytest.approx(100 * accuracy) == pytest.approx(100 * 3 / 4)
        assert float(row["score_release"]) == pytest.approx(average) == pytest.approx((5 + 4 + 2 + 3) / 5)
        assert float(row["score"]) == pytest.approx((5 + 4.8 + 2 + 3) / 4)  # ours: over the readable entries
        assert (int(row["judged"]), int(row["failures"])) == (4, 1)
    table = (tmp_path / "r" / "report.md").read_text()
    assert "| MSVD_Zero_Shot_QA | 75.0 / 3.70 (2.80) |" in table and f"release:gpt-3.5-turbo@{QA.hash[:8]}" in table


def test_judge_resumes_from_the_release_output(release_run, scripted_openai_server, tmp_path):
    run, _, _ = release_run
    predictions = read_jsonl(run / "merge.jsonl")
    predictions[0]["pred"] = "a changed answer"  # judged by the release for another prediction
    write_jsonl(tmp_path / "merge.jsonl", predictions)
    server = scripted_openai_server(lambda body, n: ("ok", "{'pred': 'no', 'score': 1}"))
    for source in (run / "gpt3", run / "results.json"):
        out = tmp_path / f"ours_{source.name}"
        assert main(["eval", "judge", str(tmp_path / "merge.jsonl"), "--base-url", server.base_url, "--judge-model",
                     "j", "--workers", "1", "--output-dir", str(out), "--resume-from", str(source),
                     "--cache", str(out / "cache.jsonl"), "--benchmark-name", "MSVD", "--model-name", "m"]) == 0
        asked = [r["messages"][1]["content"] for r in server.requests[-3:]]
        # Item 0 (changed), 4 (no score there) and 5 (never judged) are asked; 1-3 come from the release.
        assert [any(f"clip {i}?" in a for a in asked) for i in range(6)] == [True, False, False, False, True, True]
        metrics = read_metrics(out)
        assert metrics["resumed"]["items"] == 3 and (metrics["yes"], metrics["no"]) == (2, 4)
        assert (out / "v_2.json").read_bytes() == (run / "gpt3" / "v_2.json").read_bytes()
        assert json.loads((out / "v_1.json").read_text())[0] == {"pred": "yes", "score": 4.8}  # 'Yes' read as yes
    assert len(server.requests) == 6


def test_release_inputs_that_are_not_its_layout_are_one_line_errors(release_run, tmp_path, capsys):
    run, _, _ = release_run
    (run / "gpt3" / "summary.json").write_text(json.dumps({"accuracy": 0.5}))
    assert main(["eval", "report", str(run / "gpt3"), "--out", str(tmp_path / "r")]) == 1
    assert re.search(r"summary\.json is no \[verdict, qa\] item", capsys.readouterr().err)
    assert main(["eval", "judge", str(run / "merge.jsonl"), "--backend", "rule", "--output-dir", str(tmp_path / "o"),
                 "--resume-from", str(run / "merge.jsonl"), "--benchmark-name", "MSVD", "--model-name", "m"]) == 1
    assert re.search("merge.jsonl: cannot read the release.s judge output", capsys.readouterr().err)
