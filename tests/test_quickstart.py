"""The quickstart's mechanics end to end (a reduced run: a couple of steps per stage), not its accuracy."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor

from conftest import REDUCED_QUICKSTART, assert_same_greedy_answer
from videopanda.data.synth import QA_DIR
from videopanda.eval.judge.rule_backend import rule_match
from videopanda.eval.judge.runner import read_metrics
from videopanda.quickstart.config import STAGE_NAMES, QuickstartConfig
from videopanda.quickstart.evaluate import accuracy_by_type
from videopanda.quickstart.report import QuickstartResults, table

ROWS = ("untrained", *STAGE_NAMES)


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # the shared reduced quickstart
def test_results_json_has_the_documented_schema(quickstart_dir):
    results = json.loads((quickstart_dir / "results.json").read_text())
    assert set(results) == {"wall_seconds", "precision", "questions", "chance", "accuracy"}
    assert results["precision"]["dtype"] in ("float32", "bfloat16") and results["precision"]["reason"]
    assert results["wall_seconds"] > 0
    assert set(results["accuracy"]) == set(ROWS)
    for row in (results["chance"], *results["accuracy"].values()):
        assert {"appearance", "temporal"} <= set(row)
        assert all(0.0 <= value <= 1.0 for value in row.values())
    assert set(results["chance"]) == set(results["accuracy"]["finetune"])


@pytest.mark.slow  # the shared reduced quickstart
def test_every_evaluation_answered_every_held_out_question_and_is_scored_by_rule(quickstart_dir):
    test_a = json.loads((quickstart_dir / "data" / QA_DIR / "test_a.json").read_text())
    types = {a["question_id"]: a["type"] for a in test_a}
    results = json.loads((quickstart_dir / "results.json").read_text())
    for row in ROWS:
        predictions = _read_jsonl(quickstart_dir / "eval" / row / "merge.jsonl")
        scored = results["questions"][row]  # mid-run rows: the first N questions; the final row: all
        midrun = min(len(test_a), QuickstartConfig().midrun_eval_questions)
        assert scored == (len(test_a) if row == ROWS[-1] else midrun)
        assert [p["id"] for p in predictions] == [a["question_id"] for a in test_a][:scored]
        recomputed = accuracy_by_type(predictions, types)
        for kind, value in results["accuracy"][row].items():
            assert value == pytest.approx(recomputed[kind], abs=1e-4)


@pytest.mark.slow  # the shared reduced quickstart
def test_report_plots_and_judge_are_written(quickstart_dir):
    report = (quickstart_dir / "report.md").read_text()
    assert "| finetune |" in report and "| chance |" in report
    for name in ("loss.png", "accuracy.png"):
        assert (quickstart_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    judge = read_metrics(quickstart_dir / "judge")
    assert judge["total"] == 1 and judge["judge"]["backend"] == "local"
    assert f"{judge['judged']} of 1 final answers judged" in report  # the report says what the judge made of them
    assert "videopanda eval judge eval/finetune/merge.jsonl --backend openai" in report


@pytest.mark.slow  # the shared reduced quickstart
def test_final_model_loads_and_answers_with_its_training_template(quickstart_dir):
    from videopanda.data.decode import find_video_file
    from videopanda.inference import GenerationConfig, VideoPandaPredictor, model_template

    model_dir = quickstart_dir / "model"
    assert model_template(model_dir) == "chat_template"
    precision = json.loads((quickstart_dir / "results.json").read_text())["precision"]["dtype"]
    predictor = VideoPandaPredictor.from_pretrained(model_dir, GenerationConfig(max_new_tokens=6), dtype=precision)
    assert predictor.model.config.image_size == QuickstartConfig().model["image_size"]
    processor = AutoProcessor.from_pretrained(model_dir)  # the model directory holds its processor
    assert processor.template == "chat_template" and processor.chat_template == predictor.processor.chat_template
    question = json.loads((quickstart_dir / "data" / QA_DIR / "test_q.json").read_text())[0]
    video = find_video_file(quickstart_dir / "data" / QA_DIR / "videos", question["video_name"])
    final = _read_jsonl(quickstart_dir / "eval" / "finetune" / "merge.jsonl")[0]
    # The saved model is the model that was evaluated (batched there: equal up to logit near-ties).
    assert_same_greedy_answer(predictor, predictor.load_video(video), question["question"], final["pred"])


@pytest.mark.slow  # the shared reduced quickstart
def test_the_same_seed_gives_the_same_run(quickstart_dir, tmp_path, precision):
    """The STAB's initial weights follow --seed, so a second run ends with the same weights and accuracies."""
    from safetensors.torch import load_file

    from videopanda.cli import main

    again = tmp_path / "again"
    argv = ["quickstart", "--out", str(again), *REDUCED_QUICKSTART, "--judge-items", "0", "--dtype", precision]
    assert main(argv) == 0
    first, second = (json.loads((d / "results.json").read_text()) for d in (quickstart_dir, again))
    assert second["accuracy"] == first["accuracy"]
    weights, repeated = (load_file(str(d / "model" / "model.safetensors")) for d in (quickstart_dir, again))
    assert weights.keys() == repeated.keys()
    assert all(torch.equal(weights[name], repeated[name]) for name in weights)


def test_table_lists_every_row_and_chance():
    results = QuickstartResults(
        1.0, {"appearance": 0.25, "temporal": 0.5},
        {row: {"appearance": 0.5, "temporal": 1.0} for row in ROWS},
    )
    lines = table(results).splitlines()
    assert lines[0] == "| model | appearance | temporal |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {row}" for row in (*ROWS, "chance")]
    assert lines[-1] == "| chance | 25.0 | 50.0 |"


def test_scaled_config_scales_steps_and_data():
    config = QuickstartConfig()
    small = config.scaled(0.1)
    for name in STAGE_NAMES:
        assert small.stages[name].steps == -(-config.stages[name].steps // 10)
    assert small.num_train == config.num_train // 10
    assert config.scaled(2.0).num_train == config.num_train  # more steps, same data
    with pytest.raises(ValueError):
        config.scaled(0)


def test_rule_accuracy_groups_fine_types_into_appearance_and_temporal():
    predictions = [{"id": "a", "answer": "red", "pred": "red"}, {"id": "b", "answer": "up", "pred": "down"},
                   {"id": "c", "answer": "two", "pred": "2"}]
    accuracy = accuracy_by_type(predictions, {"a": "colour", "b": "direction", "c": "count"})
    assert accuracy == {"all": 2 / 3, "appearance": 1.0, "colour": 1.0, "count": 1.0, "direction": 0.0,
                        "temporal": 0.5}
    assert rule_match("two", "2")


def test_naming_every_option_is_not_an_answer():
    predictions = [{"id": "a", "answer": "up", "pred": "The object moves up or down"},
                   {"id": "b", "answer": "up", "pred": "It moves up."},
                   {"id": "c", "answer": "red", "pred": "The red one, then the blue one"}]
    accuracy = accuracy_by_type(predictions, {"a": "direction", "b": "direction", "c": "order"})
    assert accuracy["direction"] == 0.5 and accuracy["order"] == 0.0
    assert rule_match("up", "The object moves up or down")  # what the plain rule would have counted


def test_cli_help_states_the_config_defaults():
    """The CLI keeps the parser import-light, so its help repeats two defaults: they must stay true."""
    from videopanda.cli import build_parser

    parser = build_parser()
    [quickstart] = [p for a in parser._subparsers._group_actions for n, p in a.choices.items() if n == "quickstart"]
    text = " ".join(quickstart.format_help().split())
    defaults = QuickstartConfig()
    assert f"held-out videos (default {defaults.num_test})" in text
    assert f"judged by the local LLM judge (default {defaults.judge_items})" in text
