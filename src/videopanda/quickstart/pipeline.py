"""``videopanda quickstart``: synthetic data -> untrained eval -> prealign -> pretrain -> finetune, evaluated
after every stage, judged by a local LLM at the end, reported in ``out``.

Everything runs in one process: SmolLM2 is loaded once, the model trains in
place from stage to stage, and only the final model is saved (``out/model``).
Layout of ``out``::

    data/            the synthetic dataset (``videopanda data synth``)
    runs/<stage>/    Trainer output of each stage (logs)
    eval/<row>/      merge.jsonl + accuracy.json of each evaluation (untrained, prealign, ...)
    judge/           the local judge's verdicts on the final model
    model/           the final model: save_pretrained + tokenizer + train_config.yaml
    results.json, report.md, loss.png, accuracy.png
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from videopanda.config import save_config
from videopanda.data.processing_videopanda import save_model_processor
from videopanda.data.synth import QA_DIR, SynthConfig, load_chance, synthesize
from videopanda.eval.run import MERGE_FILE
from videopanda.inference import ChatLLM, GenerationConfig, VideoPandaPredictor
from videopanda.model.llm import load_llm, load_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.quickstart.config import CHATML_NO_SYSTEM, STAGE_NAMES, QuickstartConfig
from videopanda.quickstart.evaluate import QASet, evaluate_qa
from videopanda.quickstart.report import QuickstartResults, judge_note, questions_note, table, write_outputs
from videopanda.quickstart.stages import stage_config, train_in_memory
from videopanda.runtime import Precision, resolve_precision

logger = logging.getLogger(__name__)
TEMPLATE = "chat_template"


@dataclass
class PhaseClock:
    """Wall seconds per named phase, for the report."""

    seconds: dict[str, float]

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        logger.info("quickstart: %s", name)
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# Seconds per training sample and per held-out question, measured on a 2-core CPU (AVX2, float32)
# with the default settings (batch 4; pretrain and finetune with LoRA), in the README's fresh-clone run
# (584 s, at a busy hour of that shared machine: a quiet hour runs ~12% faster, so the forecast errs long).
# BF16_SPEEDUP on AMX is an assumption (unmeasured).
SECONDS_PER_SAMPLE = {"prealign": 0.40, "pretrain": 0.55, "finetune": 0.78}
SECONDS_PER_QUESTION = 0.25
FIXED_SECONDS = 55  # synthesis, loading, saving, judge
BF16_SPEEDUP = 1.5


def expected_minutes(config: QuickstartConfig, precision: Precision) -> float:
    """A forecast printed at the start, from the step counts and the measured costs above."""
    speed = BF16_SPEEDUP if precision.dtype == "bfloat16" else 1.0
    train = sum(SECONDS_PER_SAMPLE[n] * s.steps * s.batch_size for n, s in config.stages.items()) / speed
    total = 5 * config.num_test // 3  # about five questions per three held-out videos
    midrun = min(total, config.midrun_eval_questions or total)
    questions = 3 * midrun + total  # untrained, prealign, pretrain on the subset; the final model on all
    return (FIXED_SECONDS + train + SECONDS_PER_QUESTION * questions) / 60


def load_models(config: QuickstartConfig):
    """(Video-Panda model around the LLM, its tokenizer, the judge: a pristine ChatLLM copy of the LLM, or None).

    The LLM and its tokenizer are read once and copied (SmolLM2 takes a few seconds even from its converted copy).
    """
    tokenizer = load_tokenizer(config.llm)
    llm = load_llm(config.llm)
    judge = ChatLLM(copy.deepcopy(llm), copy.deepcopy(tokenizer), config.llm) if config.judge_items > 0 else None
    if config.llm == "smollm2":
        tokenizer.chat_template = CHATML_NO_SYSTEM  # saved with the model: ask/chat prompt as training did
    model = VideoPandaForCausalLM.from_llm(llm, tokenizer, use_distillation=config.teacher is not None,
                                           prompt_template=TEMPLATE, **config.model)
    return model.eval(), tokenizer, judge


def make_predictor(
    model: VideoPandaForCausalLM, tokenizer, config: QuickstartConfig, precision: Precision
) -> VideoPandaPredictor:
    """The predictor ``ask``/``eval run`` would build from the saved model: same template and precision."""
    generation = GenerationConfig(max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size)
    return VideoPandaPredictor.for_model(model, tokenizer, generation, precision)


def judge_final(chat: ChatLLM, config: QuickstartConfig, predictions: Path, out: Path) -> dict:
    """The local LLM judge (the release's QA prompt) on the first ``judge_items`` final answers."""
    from videopanda.eval.judge.base import LLMJudge
    from videopanda.eval.judge.local_backend import LocalBackend
    from videopanda.eval.judge.prompts import get_prompt
    from videopanda.eval.judge.rule_backend import rule_match
    from videopanda.eval.judge.runner import load_predictions, run_judge

    items = load_predictions(predictions)[: config.judge_items]
    # Greedy decoding repeats itself: one attempt per item (a malformed reply is a recorded failure).
    judge = LLMJudge(LocalBackend(chat, max_new_tokens=24), parse_attempts=1)
    results = run_judge(items, out, judge, get_prompt("qa"), workers=1,
                        meta={"benchmark": "Synth", "model": "quickstart"})
    results["rule_match_accuracy_same_items"] = sum(rule_match(i.answer, i.pred) for i in items) / max(1, len(items))
    return results


def run_quickstart(config: QuickstartConfig, started: float | None = None) -> QuickstartResults:
    """The whole pipeline; ``started`` (a ``time.perf_counter()`` value) is when the command began."""
    started = time.perf_counter() if started is None else started
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    precision = resolve_precision(config.dtype, "cpu")
    print(f"quickstart: {precision.dtype} on a {precision.cpu_capability} CPU ({precision.reason}); "
          f"expected about {expected_minutes(config, precision):.0f} minutes", flush=True)
    clock = PhaseClock({})
    set_seed(config.seed)  # the STAB's initial weights, hence the whole run, follow --seed
    with clock.phase("synthesis"):
        synthesize(out / "data", SynthConfig(seed=config.seed, num_train=config.num_train, num_test=config.num_test))
    qa_set = QASet(out / "data" / QA_DIR)
    with clock.phase("load"):
        model, tokenizer, judge_chat = load_models(config)
    accuracy: dict[str, dict[str, float]] = {}
    total = len(qa_set.questions)
    midrun = min(total, config.midrun_eval_questions or total)  # the final model is scored on every question
    questions = {row: midrun for row in ("untrained", *STAGE_NAMES[:-1])} | {STAGE_NAMES[-1]: total}
    losses: dict[str, list[dict[str, float]]] = {}
    with clock.phase("evaluation"):
        accuracy["untrained"] = evaluate_qa(make_predictor(model, tokenizer, config, precision), qa_set,
                                            out / "eval/untrained", questions["untrained"])
    final_stage = None
    for stage in STAGE_NAMES:
        train_config = stage_config(config, stage, out / "data/train", out / "runs", precision)
        with clock.phase(f"train {stage}"):
            losses[stage] = train_in_memory(model, tokenizer, train_config)
        with clock.phase("evaluation"):
            accuracy[stage] = evaluate_qa(make_predictor(model, tokenizer, config, precision), qa_set,
                                          out / f"eval/{stage}", questions[stage])
        logger.info("after %s: %s", stage, {k: round(v, 3) for k, v in accuracy[stage].items()})
        final_stage = train_config
    with clock.phase("save"):
        model.save_pretrained(out / "model")
        save_model_processor(out / "model", tokenizer, model.config)
        save_config(final_stage, out / "model" / "train_config.yaml")
    judge = None
    if judge_chat is not None:
        with clock.phase("judge"):
            judge = judge_final(judge_chat, config, out / "eval/finetune" / MERGE_FILE, out / "judge")
    results = QuickstartResults(time.perf_counter() - started, load_chance(qa_set.directory), accuracy, losses,
                                judge, clock.seconds, precision.as_dict(), questions)
    with clock.phase("report"):
        write_outputs(results, out)
    results.wall_seconds = time.perf_counter() - started
    write_outputs(results, out)  # again, with the final wall time (plots are cheap)
    print(table(results))
    print(questions_note(results))
    if results.judge is not None:
        print(judge_note(results, out))
    print(f"wall clock: {results.wall_seconds:.0f} s; model in {out / 'model'}, report in {out / 'report.md'}")
    return results

