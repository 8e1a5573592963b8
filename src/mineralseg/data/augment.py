"""Training augmentation: the study's geometric set plus SEM brightness/contrast and noise.

The study (Keras ``ImageDataGenerator``) used rotation +-15 degrees, shifts of 5 %,
shear, zoom 30 % and horizontal/vertical flips. Here the same set is one
``albumentations`` pipeline applied to the uint8 tile and its class-id mask
together: images are interpolated bilinearly, masks with nearest neighbour (so they
keep valid class ids), and pixels that the affine transform brings in from outside
the tile are filled with ``ignore_index`` in the mask (they carry no label and add
nothing to the loss). Each part can be switched off (0 or false).
"""

from __future__ import annotations

import os
from typing import Literal

# albumentations looks for a newer version online at import; the tool runs offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from pydantic import Field  # noqa: E402

from mineralseg.classes import IGNORE_INDEX
from mineralseg.config import StrictModel  # noqa: E402

__all__ = ["AugmentConfig", "build_augmentation"]

# Probabilities of the non-geometric parts: flips as in Keras (one coin each);
# photometric changes on half of the tiles so the model also sees clean SEM.
_FLIP_P = 0.5
_PHOTOMETRIC_P = 0.5


class AugmentConfig(StrictModel):
    """Augmentation switches (the defaults follow the study; 0 / false turns a part off)."""

    enabled: bool = True
    rotate: float = Field(15.0, ge=0, le=180, description="max rotation, degrees (study: 15)")
    shift: float = Field(0.05, ge=0, le=0.5, description="max shift, fraction of the tile side (study: 0.05)")
    # The study's README gives "shear range: 50 degrees" (Keras shear_range); that
    # pushes up to half a tile out of view, so the default is milder. Set 50 to repeat it.
    shear: float = Field(10.0, ge=0, lt=90, description="max shear, degrees")
    zoom: float = Field(0.3, ge=0, lt=1, description="scale drawn from [1 - zoom, 1 + zoom] (study: 0.3)")
    hflip: bool = True
    vflip: bool = True
    brightness: float = Field(0.1, ge=0, le=1, description="max brightness change, fraction of 255")
    contrast: float = Field(0.1, ge=0, le=1, description="max contrast change, fraction")
    noise: float = Field(0.02, ge=0, le=1, description="max Gaussian noise std, fraction of 255")
    border: Literal["constant", "reflect"] = Field(
        "constant", description="constant: image 0, mask ignore_index outside the tile; reflect: mirror both"
    )


def build_augmentation(cfg: AugmentConfig, *, ignore_index: int = IGNORE_INDEX) -> A.Compose | None:
    """The training augmentation pipeline, or None when everything is switched off.

    Parameters
    ----------
    cfg : AugmentConfig
    ignore_index : int
        Mask fill value for pixels brought in from outside the tile.

    Returns
    -------
    albumentations.Compose or None
        Call as ``out = aug(image=img, mask=mask)`` with ``img`` (H, W) uint8 and
        ``mask`` (H, W) uint8; ``out["image"]``, ``out["mask"]`` keep shapes and dtypes.
    """
    if not cfg.enabled:
        return None
    steps: list[A.BasicTransform] = []
    if cfg.rotate or cfg.shift or cfg.shear or cfg.zoom:
        border = cv2.BORDER_CONSTANT if cfg.border == "constant" else cv2.BORDER_REFLECT_101
        steps.append(
            A.Affine(
                rotate=(-cfg.rotate, cfg.rotate),
                translate_percent=(-cfg.shift, cfg.shift),
                shear=(-cfg.shear, cfg.shear),
                scale=(1.0 - cfg.zoom, 1.0 + cfg.zoom),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=border,
                fill=0,
                fill_mask=ignore_index,
                p=1.0,  # Keras' generator transforms every image
            )
        )
    if cfg.hflip:
        steps.append(A.HorizontalFlip(p=_FLIP_P))
    if cfg.vflip:
        steps.append(A.VerticalFlip(p=_FLIP_P))
    if cfg.brightness or cfg.contrast:
        steps.append(
            A.RandomBrightnessContrast(
                brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=_PHOTOMETRIC_P
            )
        )
    if cfg.noise:
        steps.append(A.GaussNoise(std_range=(0.0, cfg.noise), p=_PHOTOMETRIC_P))
    return A.Compose(steps) if steps else None
