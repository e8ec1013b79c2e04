"""lmms-eval task functions of videopanda's QA tasks; the judge is the one ``videopanda_tasks.yaml`` beside
this file names (written by ``videopanda eval lmms-tasks``). The API key is read here, at the client boundary.
Plain functions (lmms-eval deep-copies task configs): the judge is built on first use."""

import functools
import os
from pathlib import Path

from videopanda.lmms import qa_task
from videopanda.lmms.qa_task import (  # noqa: F401  (named by the task YAML)
    aggregate_accuracy,
    aggregate_accuracy_all,
    aggregate_rule_accuracy,
    aggregate_score,
    doc_to_target,
    doc_to_text,
    doc_to_visual,
)


@functools.cache
def _judge():
    return qa_task.judge_from_settings(Path(__file__).with_name("videopanda_tasks.yaml"),
                                       api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY")


def process_results(doc, results):
    return qa_task.process_results(doc, results, _judge())
