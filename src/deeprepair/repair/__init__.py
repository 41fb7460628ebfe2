"""Repairing a deployed classifier from collected failures (DeepRepair and its baselines)."""

import sys as _sys
import types as _types

from . import gate as _gate  # noqa: F401  registers the routed-repair ("gate") checkpoint kind
from .compare import compare, repair_report_markdown
from .core import RepairConfig, repair
from .methods import method_names, register_method

METHODS = method_names()  # the registered repair methods (repair/methods.py)

__all__ = ["METHODS", "RepairConfig", "compare", "register_method", "repair", "repair_report_markdown"]


class _CallablePackage(_types.ModuleType):
    """``from deeprepair import repair`` yields this package (Python binds a subpackage to its
    parent's attribute of the same name), so calling the package calls ``repair()``."""

    def __call__(self, *args, **kwargs):
        return repair(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
