"""Repairing a deployed classifier from collected failures (DeepRepair and its baselines)."""

from .core import METHODS, RepairConfig, repair
from .report import compare, repair_report_markdown

__all__ = ["METHODS", "RepairConfig", "compare", "repair", "repair_report_markdown"]
