"""The quickstart: the whole Video-Panda pipeline on synthetic data with SmolLM2, in minutes on a CPU."""

from videopanda.quickstart.config import QuickstartConfig, StageSettings
from videopanda.quickstart.pipeline import run_quickstart

__all__ = ["QuickstartConfig", "StageSettings", "run_quickstart"]
