"""The ``lmms_eval.models`` entry point: ``lmms-eval --model videopanda`` resolves to ``model.VideoPandaLMM``."""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(model_id="videopanda", simple_class_path="videopanda.lmms.model.VideoPandaLMM")
