"""Segmentation models: one factory for library and project architectures.

>>> from mineralseg.models import build_model
>>> model = build_model("unet", "resnet18", num_classes=4)   # 1-channel input by default

See :func:`build_model` for names, :mod:`mineralseg.models.weights` for pretrained and
local encoder weights, :func:`set_encoder_frozen` for frozen-encoder training.
"""

from mineralseg.models.architectures import architecture_names, resolve_architecture
from mineralseg.models.encoders import STUDY_ENCODERS, encoder_names, resolve_encoder
from mineralseg.models.factory import MAX_CLASSES, MIN_CLASSES, build_model, input_divisor, min_input_size
from mineralseg.models.pix2pix import PatchDiscriminator, Pix2PixGenerator, receptive_field
from mineralseg.models.plain_unet import PlainUNet
from mineralseg.models.resunet import ResUNet
from mineralseg.models.segmentation_model import SegmentationModel, model_info, set_encoder_frozen
from mineralseg.models.weights import (
    adapt_first_conv_weight,
    default_weights_path,
    load_encoder_weights,
    save_encoder_weights,
)

__all__ = [
    "MAX_CLASSES",
    "MIN_CLASSES",
    "STUDY_ENCODERS",
    "PatchDiscriminator",
    "Pix2PixGenerator",
    "PlainUNet",
    "ResUNet",
    "SegmentationModel",
    "adapt_first_conv_weight",
    "architecture_names",
    "build_model",
    "default_weights_path",
    "encoder_names",
    "input_divisor",
    "load_encoder_weights",
    "min_input_size",
    "model_info",
    "receptive_field",
    "resolve_architecture",
    "resolve_encoder",
    "save_encoder_weights",
    "set_encoder_frozen",
]
