"""The benchmark harness: profiles, resumable cells, executors, and the report."""

from .profile import current_name, label, list_profiles, load_profile, recipe_options, restrict
from .report import write as write_report
from .runner import list_cells, run

__all__ = ["current_name", "label", "recipe_options", "list_cells", "list_profiles", "load_profile", "restrict", "run", "write_report"]
