"""``lmms-eval --model videopanda --model_args pretrained=DIR,dtype=auto,num_frames=8``: our predictor in lmms-eval.

Answers come from ``inference.VideoPandaPredictor`` (the one inference path of
``eval run``: same preprocessing, prompt template, precision policy, greedy decoding),
batched ``batch_size`` at a time, each request with its own ``until`` stops and
``max_new_tokens``. A request's visuals are a video file path, a list of frames or an
image (``visuals.request_visuals``). ``loglikelihood`` returns what lmms-eval's own
video models return, ``(mean negative log-likelihood of the reply, is_greedy)``, lower
is likelier (``likelihood.answer_losses``), the options of one document scored
together on the document's video decoded once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lmms_eval.api import instance as lmms_instance
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from videopanda.data.conversation import Turn
from videopanda.data.transform import VisualInputs
from videopanda.inference import GenerationConfig, GenerationRequest, VideoPandaPredictor
from videopanda.lmms.likelihood import answer_losses
from videopanda.lmms.visuals import request_visuals

logger = logging.getLogger(__name__)


class VideoPandaLMM(lmms):
    is_simple = True

    def __init__(
        self, pretrained: str, dtype: str = "auto", device: str = "cpu", batch_size: int | str = 1,
        num_frames: int | None = None, max_new_tokens: int = 1024, template: str | None = None, **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            logger.warning("videopanda: ignoring model_args %s", sorted(unused))
        config = GenerationConfig(int(max_new_tokens), template, int(batch_size))
        self.predictor = VideoPandaPredictor.from_pretrained(pretrained, config, device, dtype)
        trained = self.predictor.model.config.num_frames
        if num_frames is not None and int(num_frames) != trained:
            raise ValueError(f"num_frames={num_frames}: {pretrained} takes the {trained} frames it was trained on")

    @property
    def batch_size(self) -> int:
        return self.predictor.batch_size

    def _visuals(self, visuals: Sequence[Any] | None) -> VisualInputs | None:
        return request_visuals(visuals, self.predictor)

    def _doc_visuals(self, doc_to_visual, doc_id, task, split) -> VisualInputs | None:
        return self._visuals(doc_to_visual(self.task_dict[task][split][doc_id]))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, ``batch_size`` requests per generation, each cut at its own ``until`` and
        ``max_new_tokens`` (and at the template's end of turn)."""
        answers: list[str] = []
        args = [r.args for r in requests]
        for start in range(0, len(args), self.batch_size):
            batch = [GenerationRequest(context, self._doc_visuals(to_visual, doc_id, task, split),
                                       max_new_tokens=_max_new_tokens(kwargs, self.predictor), stop=_until(kwargs))
                     for context, kwargs, to_visual, doc_id, task, split in args[start : start + self.batch_size]]
            answers += [result.text for result in self.predictor.generate(batch)]
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[tuple[str, ...]]:
        """Each round's answer, the earlier rounds as chat history, until the task's ``doc_to_text`` says stop."""
        results = []
        for context, gen_kwargs, to_visual, to_text, doc_id, task, split in (r.args for r in requests):
            doc = self.task_dict[task][split][doc_id]
            visuals, replies, info = self._visuals(to_visual(doc)), [], None
            history: list[Turn] = []
            limit, stop = _max_new_tokens(gen_kwargs, self.predictor), _until(gen_kwargs)
            for round_idx in range(1, 1_000):
                request = GenerationRequest(context, visuals, list(history), max_new_tokens=limit, stop=stop)
                reply = self.predictor.generate([request])[0].text
                replies.append(reply)
                history += [Turn("user", context), Turn("assistant", reply)]
                next_visuals, context, done, _, info = to_text(doc, previous_output=replies, round_idx=round_idx,
                                                               previous_round_info=info)
                if done:
                    break
                if next_visuals:
                    visuals = self._visuals(next_visuals)
            results.append(tuple(replies))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        """``(loss, is_greedy)`` per request as lmms-eval's video models return it (``likelihood``): the mean
        negative log-likelihood of the continuation as the assistant's reply; lower is likelier.

        The requests of one document (its options) share one decoding of its video and are scored
        ``batch_size`` rows per forward pass.
        """
        by_doc: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            if len(request.args) != 6:
                raise ValueError("videopanda scores (context, continuation, doc_to_visual, doc_id, task, split) "
                                 f"requests; got {len(request.args)} arguments (acc_mutual_info is not supported)")
            _, _, _, doc_id, task, split = request.args
            by_doc.setdefault((task, split, doc_id), []).append(index)
        results: list[Any] = [None] * len(requests)
        for (task, split, doc_id), indices in by_doc.items():
            doc = self.task_dict[task][split][doc_id]
            visuals = self._visuals(requests[indices[0]].args[2](doc))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                contexts = [requests[i].args[0] for i in chunk]
                targets = [requests[i].args[1] for i in chunk]
                continuations = [t if isinstance(t, str) else str(t(doc)) for t in targets]
                for i, scored in zip(chunk, answer_losses(self.predictor, visuals, contexts, continuations),
                                     strict=True):
                    results[i] = _as_evaluator_reads(scored)
        return results


def _max_new_tokens(gen_kwargs: dict[str, Any], predictor: VideoPandaPredictor) -> int:
    """The task's ``max_new_tokens``; sampling settings are refused (answers are greedy, as in ``eval run``)."""
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
        logger.warning("videopanda decodes greedily; ignoring do_sample/temperature %s", gen_kwargs)
    return int(gen_kwargs.get("max_new_tokens") or predictor.config.max_new_tokens)


def _until(gen_kwargs: dict[str, Any]) -> list[str]:
    """The task's stop strings (``until``: a string or a list of them)."""
    until = gen_kwargs.get("until") or []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list | tuple) or not all(isinstance(u, str) for u in until):
        raise ValueError(f"generation_kwargs until must be a string or a list of strings, got {until!r}")
    return [u for u in until if u]


def _evaluator_passes_pairs() -> bool:
    """Whether lmms-eval's evaluator keeps a model's ``(float, bool)`` as it is. lmms-eval 0.7.3 sends every
    output through ``unwrap_generation_output``, which turns the pair into its ``str`` (its own
    ``multiple_choice`` scoring then fails: "too many values to unpack") but hands a ``GenerationResult``'s
    ``text`` over untouched."""
    unwrap = getattr(lmms_instance, "unwrap_generation_output", None)
    return unwrap is None or unwrap((0.5, True))[0] == (0.5, True)


_WRAP_PAIRS = not _evaluator_passes_pairs()


def _as_evaluator_reads(scored: tuple[float, bool]) -> Any:
    """The pair as the installed evaluator reads it back: itself, or inside a ``GenerationResult``."""
    return lmms_instance.GenerationResult(text=scored) if _WRAP_PAIRS else scored
