"""Scoring answers to one prompt the way lmms-eval's own models do: the mean negative log-likelihood.

lmms-eval's video models (``llava_vid``, ``llava_onevision``, ``llava``, ``longva``) return, per request,
``(loss, is_greedy)``: ``loss`` is the model's cross-entropy over the assistant's turn holding the
continuation (its tokens and the template's end-of-turn marker), averaged over those tokens, so LOWER
is more likely; the ``multiple_choice`` tasks and the ``mcppl`` tasks' ``process_results`` pick the
option of smallest value. The continuation's leading space (the task's ``target_delimiter``) is
dropped: the template puts its own between the role and the reply. The turn is encoded by the
processor's training encoding (``encode_conversation``: labels on exactly the reply and its end-of-turn
marker), so the loss is the one training minimises on that answer.

Shapes: ``B`` rows (the options of one document), ``L`` tokens (right-padded), ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from videopanda.data.collator import IGNORE_INDEX, VideoPandaCollator
from videopanda.data.conversation import Turn
from videopanda.data.processing_videopanda import as_plain_text
from videopanda.data.transform import VisualInputs
from videopanda.inference import VideoPandaPredictor


@torch.no_grad()
def answer_losses(
    predictor: VideoPandaPredictor, visuals: VisualInputs | None, contexts: Sequence[str],
    continuations: Sequence[str],
) -> list[tuple[float, bool]]:
    """(mean NLL of each reply after its question, whether greedy decoding would give exactly that reply),
    all rows in one forward pass sharing ``visuals`` (decoded once by the caller)."""
    processor, model = predictor.processor, predictor.model
    samples = [processor.encode_conversation([Turn("user", as_plain_text(c)), Turn("assistant", a.lstrip())], visuals)
               for c, a in zip(contexts, continuations, strict=True)]
    collated = VideoPandaCollator(processor.tokenizer.pad_token_id, padding_side="right")(samples)
    batch = {k: v for k, v in collated.items() if isinstance(v, torch.Tensor)}  # not the sample keys
    inputs = {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                     "video_grid_thw")}
    if "pixel_values_videos" in batch:
        inputs["pixel_values_videos"] = batch["pixel_values_videos"].to(model.device, model.dtype)
    logits = model(**inputs).logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
    targets = batch["labels"][:, 1:].to(logits.device)  # (B, L-1)
    scored = targets != IGNORE_INDEX
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, L-1)
    counts = scored.sum(-1)  # (B,)
    losses = -(token_logp * scored).sum(-1) / counts.clamp(min=1)
    greedy = ((logits.argmax(-1) == targets) | ~scored).all(-1)
    return [(float(loss), bool(g)) for loss, g in zip(losses.tolist(), greedy.tolist(), strict=True)]
