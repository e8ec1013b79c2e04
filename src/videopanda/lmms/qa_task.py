"""The functions of our lmms-eval QA tasks (MSVD/MSRVTT/TGIF/ActivityNet-QA and the synthetic set).

A task's docs are the benchmark's questions joined with their answers by
``question_id`` (``eval.run.load_qa_pairs``, as ``eval run`` does), each with its
video's path. The question is asked as the release asks it (no extra prompt).
Each answer is judged twice, with the judges of ``eval judge``: the release's
QA prompt on any OpenAI-compatible endpoint, and our rule-based match. Metrics:

    gpt_eval_accuracy      yes / (yes + no) over judged answers, in % (the release; ``eval judge`` accuracy)
    gpt_eval_accuracy_all  yes / all, unjudged as no, in % (lmms-eval's activitynetqa; ``accuracy_all``)
    gpt_eval_score         mean judge score 0-5 (``mean_score``)
    rule_accuracy          rule-based matches / all, in % (``eval judge --backend rule`` accuracy)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from videopanda.eval.judge.base import Judge, JudgeRequest, QAItem, Verdict
from videopanda.eval.judge.prompts import get_prompt
from videopanda.eval.judge.rule_backend import RuleJudge
from videopanda.eval.judge.scoring import summarize

METRICS = ("gpt_eval_accuracy", "gpt_eval_accuracy_all", "gpt_eval_score", "rule_accuracy")


def doc_to_visual(doc: Mapping[str, Any]) -> list[str]:
    return [doc["video"]]


def doc_to_text(doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: Mapping[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: Mapping[str, Any], results: Sequence[str], judge: Judge,
                    prompt_name: str = "qa") -> dict[str, dict[str, Any]]:
    """Both judges' verdicts on one answer, the same record under every metric."""
    item = QAItem(str(doc["question_id"]), doc["question"], doc["answer"], results[0])
    prompt = get_prompt(prompt_name)
    record = {
        "question_id": item.id, "question": item.question, "answer": item.answer, "pred": item.pred,
        "judge": judge.judge(JudgeRequest(item, prompt)).to_dict(),
        "rule": RuleJudge().judge(JudgeRequest(item, prompt)).to_dict(),
    }
    return {metric: record for metric in METRICS}


def aggregate_accuracy(results: Sequence[Mapping[str, Any]], args: Any = None) -> float | None:
    return _percent(_summary(results, "judge")["accuracy"])


def aggregate_accuracy_all(results: Sequence[Mapping[str, Any]], args: Any = None) -> float | None:
    return _percent(_summary(results, "judge")["accuracy_all"])


def aggregate_score(results: Sequence[Mapping[str, Any]], args: Any = None) -> float | None:
    return _summary(results, "judge")["mean_score"]


def aggregate_rule_accuracy(results: Sequence[Mapping[str, Any]], args: Any = None) -> float | None:
    return _percent(_summary(results, "rule")["accuracy"])


def judge_from_settings(path: str | Path, api_key: str = "EMPTY") -> Judge:
    """The judge a tasks directory's ``videopanda_tasks.yaml`` names (``tasks_dir.TaskJudge`` fields)."""
    from videopanda.lmms.tasks_dir import TaskJudge

    try:
        judge = TaskJudge(**(yaml.safe_load(Path(path).read_text()) or {})["judge"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not the settings of `videopanda eval lmms-tasks` ({err})") from err
    if judge.backend == "rule":
        return RuleJudge()
    if judge.backend != "openai":
        raise ValueError(f"{path}: judge backend {judge.backend!r} is neither 'openai' nor 'rule'")
    from videopanda.eval.judge.base import LLMJudge
    from videopanda.eval.judge.openai_backend import OpenAIBackend, OpenAIJudgeConfig

    return LLMJudge(OpenAIBackend(OpenAIJudgeConfig(
        model=judge.model, base_url=judge.base_url, api_key=api_key, timeout_s=judge.timeout_s,
        max_attempts=judge.max_attempts, seed=judge.seed,
    )))


def _summary(results: Sequence[Mapping[str, Any]], which: str) -> dict[str, Any]:
    """``eval judge``'s summary over the per-answer records."""
    return summarize([Verdict(**r[which]) for r in results])


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value
