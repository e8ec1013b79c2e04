"""``lmms-eval --model videopanda --model_args pretrained=DIR,dtype=auto,num_frames=8``: our predictor in lmms-eval.

Answers come from ``eval.predict.VideoPandaPredictor`` (the one inference path of
``eval run``: same preprocessing, prompt template, precision policy, greedy decoding),
batched ``batch_size`` at a time. A request's visuals are video file paths
(lmms-eval's video tasks) or PIL images; ``loglikelihood`` is the sum of the
continuation's token log-probabilities after the visual prompt (the assistant's turn).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import Turn
from videopanda.data.processing_videopanda import EncodedSample
from videopanda.data.transform import VisualInputs, preprocess_frames
from videopanda.eval.predict import GenerationConfig, VideoPandaPredictor

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

    def _visuals(self, visuals: Sequence[Any]) -> VisualInputs | None:
        """A request's visuals: one video file path, or images (each a frame), or none."""
        flat = [v for item in visuals for v in (item if isinstance(item, list | tuple) else [item])]
        if not flat:
            return None
        if len(flat) == 1 and isinstance(flat[0], str):
            return self.predictor.load_video(flat[0])
        if all(hasattr(v, "convert") for v in flat):  # PIL images
            cfg = self.predictor.model.config
            frames = np.stack([np.asarray(v.convert("RGB").resize(flat[0].size)) for v in flat])  # (T, H, W, 3)
            return preprocess_frames(frames, image_size=cfg.image_size, teacher_image_size=cfg.teacher_image_size,
                                     patch_size=cfg.patch_size, num_frames=cfg.num_frames, with_teacher=False)
        raise ValueError(f"videopanda takes one video file or a list of images per request, got {flat!r:.200}")

    def _doc_visuals(self, doc_to_visual, doc_id, task, split) -> VisualInputs | None:
        return self._visuals(doc_to_visual(self.task_dict[task][split][doc_id]))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, ``batch_size`` requests per generation; ``until`` is the template's end of turn."""
        answers: list[str] = []
        args = [r.args for r in requests]
        for start in range(0, len(args), self.batch_size):
            batch = args[start : start + self.batch_size]
            visuals = [self._doc_visuals(to_visual, doc_id, task, split) for _, _, to_visual, doc_id, task, split in batch]
            answers += self.predictor.answer(visuals, [a[0] for a in batch],
                                             max_new_tokens=_max_new_tokens(batch[0][1], self.predictor))
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[tuple[str, ...]]:
        """Each round's answer, the earlier rounds as chat history, until the task's ``doc_to_text`` says stop."""
        results = []
        for context, gen_kwargs, to_visual, to_text, doc_id, task, split in (r.args for r in requests):
            doc = self.task_dict[task][split][doc_id]
            visuals, history, replies, info = self._visuals(to_visual(doc)), [], [], None
            limit = _max_new_tokens(gen_kwargs, self.predictor)
            for round_idx in range(1, 1_000):
                reply = self.predictor.answer([visuals], [context], [history], max_new_tokens=limit)[0]
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

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation tokens | visual prompt), whether greedy decoding would produce them)."""
        processor, model = self.predictor.processor, self.predictor.model
        results = []
        for context, target, to_visual, doc_id, task, split in (r.args for r in requests):
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            prompt = processor.encode_prompt([Turn("user", context)], self._visuals(to_visual(doc)))
            cont_ids = torch.tensor(processor.tokenizer.encode(continuation, add_special_tokens=False))  # (C,)
            if not len(cont_ids):
                results.append((0.0, True))
                continue
            sample = EncodedSample(torch.cat([prompt.input_ids, cont_ids]), None, prompt.pixel_values,
                                   prompt.chunk_lengths)
            batch = VideoPandaCollator(processor.tokenizer.pad_token_id, padding_side="left")([sample])
            inputs = {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                             "chunk_lengths")}
            if "pixel_values" in batch:
                inputs["pixel_values"] = batch["pixel_values"].to(model.device, model.dtype)
            logits = model(**inputs).logits[0, len(prompt.input_ids) - 1 : -1].float()  # (C, V)
            log_probs = torch.log_softmax(logits, dim=-1)
            cont_ids = cont_ids.to(log_probs.device)
            total = log_probs.gather(1, cont_ids[:, None]).sum().item()
            results.append((total, bool((log_probs.argmax(-1) == cont_ids).all())))
        return results


def _max_new_tokens(gen_kwargs: dict[str, Any], predictor: VideoPandaPredictor) -> int:
    """The task's ``max_new_tokens``; sampling settings are refused (answers are greedy, as in ``eval run``)."""
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
        logger.warning("videopanda decodes greedily; ignoring do_sample/temperature %s", gen_kwargs)
    return int(gen_kwargs.get("max_new_tokens") or predictor.config.max_new_tokens)
