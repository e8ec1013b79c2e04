"""lmms-eval task functions of videopanda's QA tasks; the judge is the one ``videopanda_tasks.yaml`` beside
this file names (written by ``videopanda eval lmms-tasks``). The API key is read here, at the client boundary."""

import os
from pathlib import Path

from videopanda.lmms.qa_task import QATaskFunctions, judge_from_settings

_TASK = QATaskFunctions(judge_from_settings(Path(__file__).with_name("videopanda_tasks.yaml"),
                                            api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY"))

doc_to_visual = _TASK.doc_to_visual
doc_to_text = _TASK.doc_to_text
doc_to_target = _TASK.doc_to_target
process_results = _TASK.process_results
aggregate_accuracy = _TASK.aggregate_accuracy
aggregate_accuracy_all = _TASK.aggregate_accuracy_all
aggregate_score = _TASK.aggregate_score
aggregate_rule_accuracy = _TASK.aggregate_rule_accuracy
