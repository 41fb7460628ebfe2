"""deeprepair: repair a deployed image classifier from a handful of field failures.

The public face, imported lazily so that ``import deeprepair`` stays cheap (no torch)::

    from deeprepair import repair, corrupt, load_checkpoint, load_dataset

``repair`` is the ``deeprepair.repair`` package, which is callable: ``repair(model, train,
failures, config)`` calls ``deeprepair.repair.repair`` (a module attribute named like the
subpackage could not be anything else once the subpackage is imported). ``load_checkpoint``
loads every checkpoint kind, routed repairs (``--gate``) included.
"""

from importlib import import_module

__version__ = "0.1.0"

# name -> module that defines it; resolved on first use (module __getattr__, PEP 562)
_LAZY = {
    "corrupt": "deeprepair.corruptions",
    "load_dataset": "deeprepair.data",
    "load_checkpoint": "deeprepair.models.checkpoint",
}

__all__ = ["__version__", "corrupt", "load_checkpoint", "load_dataset", "repair"]


def __getattr__(name: str):
    if name == "repair":
        return import_module("deeprepair.repair")  # the (callable) package; importing it sets the attribute
    if name in _LAZY:
        if name == "load_checkpoint":
            import_module("deeprepair.repair")  # registers the routed-repair checkpoint kind
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deeprepair' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
