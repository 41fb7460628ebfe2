"""The benchmark harness: profiles, resumable cells, executors, and the report."""

from .profile import METHOD_OPTIONS, list_profiles, load_profile, restrict
from .report import write as write_report
from .runner import list_cells, run

__all__ = ["METHOD_OPTIONS", "list_cells", "list_profiles", "load_profile", "restrict", "run", "write_report"]
