"""deeprepair: repair a deployed image classifier from a handful of field failures."""

__version__ = "0.1.0"
