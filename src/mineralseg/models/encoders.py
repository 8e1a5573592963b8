"""Encoder (backbone) names: the study's names, smp's names and timm models.

Accepted names, case-insensitive:

- the study's seven backbones under the study's names: ``resnet18``, ``vgg16``,
  ``vgg19``, ``inceptionv3``, ``inceptionresnetv2``, ``efficientnet-b3``,
  ``efficientnet-b4`` (``efficientnetb3`` as the study spelled it works too);
- every encoder of segmentation_models_pytorch (``resnet50``, ``mit_b2``, ...);
- any timm model as ``tu-<timm name>`` (timm "universal" encoder), optionally with a
  pretrained tag: ``tu-convnext_tiny.fb_in22k``.

smp has no Inception-v3, so ``inceptionv3`` is this project's "same"-padded
:class:`~mineralseg.models.inception_v3.InceptionV3Encoder`, registered in smp's
encoder table under :data:`PROJECT_INCEPTIONV3_KEY` (importing this module does it).
``tu-inception_v3`` stays available but, with its unpadded layers, needs inputs of at
least 96 px and works with U-Net only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import segmentation_models_pytorch as smp
import timm

from mineralseg.errors import ConfigError
from mineralseg.lookup import closest, resolve
from mineralseg.models.inception_v3 import INCEPTION_V3_OUT_CHANNELS, InceptionV3Encoder

#: The backbones compared by the original study, in its order.
STUDY_ENCODERS = (
    "resnet18",
    "vgg16",
    "vgg19",
    "inceptionv3",
    "inceptionresnetv2",
    "efficientnet-b3",
    "efficientnet-b4",
)

#: Key of the project's Inception-v3 in smp's encoder table (a prefix no smp encoder uses).
PROJECT_INCEPTIONV3_KEY = "mineralseg_inceptionv3"

#: timm model (with pretrained tag) whose ImageNet weights ``inceptionv3`` loads: the
#: TensorFlow-slim weights, the ones the study's Keras backbone used.
INCEPTIONV3_TIMM_WEIGHTS = "inception_v3.tf_in1k"

_TIMM_PREFIX = "tu-"

_ALIASES = {
    "inception_v3": "inceptionv3",
    "inception-v3": "inceptionv3",
    "inception_resnet_v2": "inceptionresnetv2",
    "inception-resnet-v2": "inceptionresnetv2",
    **{f"efficientnet{sep}b{k}": f"efficientnet-b{k}" for k in range(8) for sep in ("", "_")},
}


@dataclass(frozen=True)
class EncoderSpec:
    """A resolved encoder name.

    Attributes
    ----------
    name : str
        Canonical name, as written in configs and checkpoints (``"efficientnet-b3"``,
        ``"inceptionv3"``, ``"tu-convnext_tiny"``).
    library_name : str
        The name smp's ``get_encoder`` takes.
    source : {"smp", "timm", "project"}
        Who implements it: smp itself, timm through smp's universal encoder, or this
        project (``inceptionv3``).
    """

    name: str
    library_name: str
    source: str

    @property
    def timm_name(self) -> str | None:
        """The timm model name (with tag) of a ``tu-`` encoder, else ``None``."""
        return self.library_name[len(_TIMM_PREFIX):] if self.source == "timm" else None


def _register_project_encoders() -> None:
    """Add the project's encoders to smp's table (idempotent)."""
    smp.encoders.encoders.setdefault(
        PROJECT_INCEPTIONV3_KEY,
        {
            "encoder": InceptionV3Encoder,
            "pretrained_settings": {},
            "params": {"out_channels": INCEPTION_V3_OUT_CHANNELS},
        },
    )


_register_project_encoders()


def encoder_names() -> list[str]:
    """Canonical encoder names (the study's first), without the open-ended ``tu-`` family."""
    library = [n for n in smp.encoders.get_encoder_names() if n != PROJECT_INCEPTIONV3_KEY]
    return [*STUDY_ENCODERS, *(n for n in library if n not in STUDY_ENCODERS)]


def resolve_encoder(name: object) -> EncoderSpec:
    """Resolve an encoder name (any case, study spelling or alias).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the valid names and the closest match.
    """
    if isinstance(name, str) and name.strip().lower().startswith(_TIMM_PREFIX):
        return _resolve_timm(name.strip().lower())
    hint = f"; or any timm model as '{_TIMM_PREFIX}<timm name>'"
    canonical = resolve(name, encoder_names(), _ALIASES, kind="encoder", hint=hint)
    if canonical == "inceptionv3":
        return EncoderSpec(canonical, PROJECT_INCEPTIONV3_KEY, "project")
    return EncoderSpec(canonical, canonical, "smp")


def _resolve_timm(name: str) -> EncoderSpec:
    model = name[len(_TIMM_PREFIX):]
    base = model.split(".", 1)[0]
    if not timm.is_model(base):
        guess = closest(base, timm.list_models())
        did_you_mean = f" (did you mean '{_TIMM_PREFIX}{guess}'?)" if guess else ""
        raise ConfigError(
            f"unknown encoder {name!r}{did_you_mean}: timm has no model {base!r} "
            f"(list them with timm.list_models())"
        )
    return EncoderSpec(name, name, "timm")


def pretrained_tags(spec: EncoderSpec) -> list[str]:
    """Names of the pretrained weight sets the library can download for ``spec``.

    smp encoders may offer several (``"imagenet"``, ``"ssl"``, ``"advprop"`` ...);
    ``tu-`` encoders and ``inceptionv3`` offer ``"imagenet"`` (for ``tu-`` the
    variant is chosen by the tag in the name, ``tu-resnet18.a1_in1k``).
    """
    if spec.source == "smp":
        return list(smp.encoders.encoders[spec.library_name]["pretrained_settings"])
    return ["imagenet"]


_SAFE_FILE_CHARS = re.compile(r"[^a-z0-9_.+-]")


def file_safe(name: str) -> str:
    """``name`` with characters unsafe in file names replaced by ``_``."""
    return _SAFE_FILE_CHARS.sub("_", name.lower())
