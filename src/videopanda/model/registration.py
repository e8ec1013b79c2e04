"""``import videopanda`` makes transformers' Auto classes know Video-Panda, without importing torch.

The config, model and processor modules register themselves with ``AutoConfig`` /
``AutoModelForCausalLM`` / ``AutoProcessor`` when they are imported. ``install`` (run by
``import videopanda``) adds an import hook that imports them once transformers' own Auto module is
imported: ``import videopanda`` stays light, and
``AutoModelForCausalLM.from_pretrained(model_dir)`` works without importing the model first.

The Auto module is often imported halfway through importing one of our modules or one of
transformers' (``stab`` imports transformers' layers, which import the Auto classes); the registering
import then waits until the outermost such import ends: the hook loads every module of both packages,
so it sees each one begin and end.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

# transformers' Auto module -> the videopanda module that registers with it on import.
AUTO_REGISTRATIONS: dict[str, str] = {
    "transformers.models.auto.configuration_auto": "videopanda.model.configuration_videopanda",
    "transformers.models.auto.modeling_auto": "videopanda.model.modeling_videopanda",
    "transformers.models.auto.processing_auto": "videopanda.data.processing_videopanda",
}
_WATCHED = ("videopanda.", "transformers.")  # half-imported modules of these packages delay a registration
_pending: set[str] = set()  # registering modules waiting for the half-imported modules to end
_loading: list[str] = []  # the watched modules being imported now, outermost first


class _ThenRegister:
    """The module's own loader, then the pending registrations (a duck-typed importlib Loader: importlib.abc
    would double the import time of ``videopanda``)."""

    def __init__(self, loader: Any, name: str) -> None:
        self.loader = loader
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:
        """The rest of the loader's interface (``get_code`` for runpy, resource readers, ...) is the module's own."""
        return getattr(self.loader, name)

    def exec_module(self, module: ModuleType) -> None:
        _loading.append(self.name)
        try:
            self.loader.exec_module(module)
        finally:
            _loading.pop()
        if self.name in AUTO_REGISTRATIONS:
            _pending.add(AUTO_REGISTRATIONS[self.name])
        _register_pending()


class _AutoImportHook:
    """A meta-path finder: our and transformers' modules load with ``_ThenRegister`` around their own loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_WATCHED):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ThenRegister(spec.loader, fullname)  # type: ignore[assignment]
        return spec


def _register_pending() -> None:
    if not _pending or _loading:
        return
    while _pending:
        name = _pending.pop()
        if name not in sys.modules:  # a module being imported now registers at its end
            importlib.import_module(name)


def install() -> None:
    """Register now for the Auto modules already imported; the others when they are (idempotent)."""
    if not any(isinstance(finder, _AutoImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AutoImportHook())
    _pending.update(module for auto, module in AUTO_REGISTRATIONS.items() if auto in sys.modules)
    _register_pending()
