"""The training engine: a thin subclass of the Hugging Face ``Trainer``.

What it adds to the stock engine, and nothing else:

* the loss is the model's ``lm_loss + distill_loss``; both are also logged as
  separate scalars (tensorboard ``train/lm_loss``, ``train/distill_loss``);
* teacher features (live teacher or cache) are attached to each batch;
* AdamW over the stage's learning-rate groups (weight decay 0);
* the modality/length-grouped sampler of ``data/sampler.py``;
* a progress bar showing loss and throughput (samples/s), and the dataset's
  skipped-sample summary at the end of every epoch.

Everything else (mixed precision, gradient checkpointing and accumulation,
DDP/FSDP/DeepSpeed, checkpoints, resume with the same data order) is the
Trainer's own machinery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from videopanda.data.sampler import ModalityLengthGroupedSampler
from videopanda.train.stages import StageRule, param_groups

logger = logging.getLogger(__name__)

# batch -> (teacher_features (N_t, Dt), teacher_patches_per_frame (F,)); consumes its own batch keys.
TeacherFeatureFn = Callable[[dict[str, Tensor]], tuple[Tensor, Tensor]]
LOSS_PARTS = ("lm_loss", "distill_loss")
TEACHER_INPUT_KEYS = ("teacher_pixel_values_videos", "sample_keys")


class VideoPandaTrainer(Trainer):
    def __init__(
        self,
        *args,
        stage: StageRule,
        rates: dict[str, float],
        teacher_features: TeacherFeatureFn | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.rates = rates
        self.teacher_features = teacher_features
        # Our loss is a per-batch mean: the Trainer divides it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._part_sums = {k: torch.zeros(2, device=self.args.device) for k in LOSS_PARTS}  # (sum, count)
        self._last_log = (0, time.perf_counter())  # (global step, time) of the last training log
        self.remove_callback(ProgressCallback)
        self.add_callback(LossThroughputProgress())
        self.add_callback(SkippedSamplesReport())
        self.add_callback(ThroughputClock(self))
        self.add_callback(ShardingReport(self))

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step, all ranks and accumulation steps together."""
        args = self.args
        return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher_inputs = {k: inputs.pop(k) for k in TEACHER_INPUT_KEYS if k in inputs}
        if self.teacher_features is not None and "pixel_values_videos" in inputs:
            features, patches = self.teacher_features({**inputs, **teacher_inputs})
            inputs["teacher_features"], inputs["teacher_patches_per_frame"] = features, patches
        outputs = model(**inputs)
        if model.training:
            self._record_parts(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _record_parts(self, outputs) -> None:
        for key in LOSS_PARTS:
            value = getattr(outputs, key, None)
            if value is not None:
                self._part_sums[key] += torch.stack([value.detach().float(), value.new_ones(()).float()])

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """AdamW over the stage's learning-rate groups, weight decay 0."""
        if self.optimizer is None:
            groups = param_groups(model if model is not None else self._require_model(), self.stage, self.rates)
            self.optimizer = torch.optim.AdamW(
                groups, lr=self.rates["default"], betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon, weight_decay=0.0,
            )
            for group in groups:
                count = sum(p.numel() for p in group["params"])
                logger.info("param group %s: %d parameters, lr %g", group["name"], count, group["lr"])
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None) -> ModalityLengthGroupedSampler:
        """The global order: each optimizer step (all ranks, all accumulation steps) is one modality.

        Accelerate deals the order's consecutive per-device batches to the ranks in turn.
        """
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not hasattr(dataset, "modality_lengths"):
            raise TypeError(f"the modality-grouped sampler needs a training dataset with modality_lengths(), got "
                            f"{type(dataset).__name__}")
        args = self.args
        return ModalityLengthGroupedSampler(
            dataset.modality_lengths(), batch_size=args.per_device_train_batch_size * args.gradient_accumulation_steps,
            world_size=args.world_size, seed=args.seed,
        )

    def _issue_warnings_after_load(self, load_result) -> None:
        """Resuming warns of missing keys, but not of a tied weight's second name (saved once, tied again)."""
        super()._issue_warnings_after_load(without_tied_keys(load_result, self._require_model()))

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise ValueError("VideoPandaTrainer has no model (pass model=)")
        return self.model

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the loss parts and the throughput since the last one
            for key, sums in self._part_sums.items():
                total = self.accelerator.reduce(sums.clone(), reduction="sum")  # (2,) over ranks
                if total[1] > 0:
                    logs[key] = round(float(total[0] / total[1]), 4)
                sums.zero_()
            step, now = self.state.global_step, time.perf_counter()
            samples = (step - self._last_log[0]) * self.global_batch_size
            if samples > 0:
                logs["samples_per_second"] = round(samples / (now - self._last_log[1]), 3)
            self._last_log = (step, now)
        super().log(logs, start_time)


def tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Every name but the first of a parameter that several modules share (e.g. an LLM head tied to its
    token embeddings): checkpoints store it once, so its other names are never missing."""
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            tied.add(name)
    return tied


def without_tied_keys(load_result, model: torch.nn.Module):
    """``load_state_dict``'s result with the tied parameters' second names dropped from ``missing_keys``."""
    tied = tied_parameter_names(model)
    return load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied])


class ThroughputClock(TrainerCallback):
    """Starts the trainer's throughput clock when training (or a resumed run) begins."""

    def __init__(self, trainer: VideoPandaTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._last_log = (state.global_step, time.perf_counter())


class ShardingReport(TrainerCallback):
    """Logs the FSDP units (module classes sharded as one unit) once the model is wrapped."""

    def __init__(self, trainer: VideoPandaTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        from torch.distributed.fsdp import FSDPModule

        root = self.trainer.model_wrapped
        units = [m for m in root.modules() if isinstance(m, FSDPModule)]
        if units and state.is_world_process_zero:
            names = sorted({type(m).__name__.removeprefix("FSDP") for m in units if m is not root})
            logger.info("sharded: FSDP units %s (%d units with the root)", ", ".join(names), len(units))


class LossThroughputProgress(ProgressCallback):
    """The stock tqdm bar, with loss parts and samples/s as its postfix instead of printed dicts."""

    SHOWN = ("loss", "lm_loss", "distill_loss", "samples_per_second", "learning_rate")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = {k: logs[k] for k in self.SHOWN if k in logs}
        if shown and self.training_bar is not None:
            self.training_bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        logger.info("step %d: %s", state.global_step, shown or logs)


class SkippedSamplesReport(TrainerCallback):
    """Logs what the dataset skipped (missing/corrupt videos, ...) at the end of every epoch.

    The dataset's skip log file gathers the records of all ranks and data-loader workers.
    """

    def on_epoch_end(self, args, state, control, train_dataloader=None, **kwargs):
        summary = getattr(getattr(train_dataloader, "dataset", None), "skipped_summary", None)
        if state.is_world_process_zero and summary is not None:
            logger.info("epoch %g: %s", round(state.epoch or 0, 2), summary())
