"""Model zoo (timm-style registry) and checkpoints (safetensors + JSON metadata)."""

from . import allconv, densenet, resnet, wideresnet  # noqa: F401  (register the families)
from .classifier import Classifier
from .registry import count_parameters, create_model, list_models, model_info, register_model

__all__ = ["Classifier", "count_parameters", "create_model", "list_models", "model_info",
           "register_model"]
