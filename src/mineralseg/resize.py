"""Resizing a square tile and its class mask: the one rule for training, evaluation and prep.

The SEM image is area-averaged when shrinking and bilinear when enlarging. The mask is
resized by **centre-aligned nearest neighbour** (OpenCV ``INTER_NEAREST_EXACT``): output
pixel ``j`` takes the source pixel that contains its centre, ``floor((j + 0.5) * s)``
with ``s = source size / output size``, the rule of PIL's and scipy's nearest. OpenCV's
plain ``INTER_NEAREST`` takes ``floor(j * s)`` instead, the top-left pixel of each
footprint: shrinking a tile by 3 it picks pixel 0 of every 3-pixel block while the
area-averaged image is centred on pixel 1, so the mask lands a pixel up and left of its
image (``(s - 1) / 2`` source pixels in general); ``INTER_NEAREST_EXACT`` keeps the two
aligned and is symmetric (flipping, resizing and flipping back gives the same mask).
Both invent no class ids.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MASK_INTERPOLATION", "resize_image", "resize_mask", "resize_tile"]

#: OpenCV interpolation of class masks: centre-aligned nearest neighbour (see module doc).
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W)`` uint8 image to ``(size, size)``.

    ``INTER_AREA`` when shrinking (``size < H``), ``INTER_LINEAR`` when enlarging; the
    array itself is returned when it already has that shape.
    """
    if image.shape == (size, size):
        return image
    interp = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W)`` uint8 class-id mask to ``(size, size)``, centre-aligned nearest.

    Parameters
    ----------
    mask : (H, W) uint8 ndarray
        Class ids (any value, ``ignore_index`` included).
    size : int
        Output side.

    Returns
    -------
    (size, size) uint8 ndarray
        Output pixel ``(i, j)`` is ``mask[floor((i + 0.5) * H / size), floor((j + 0.5) * W / size)]``;
        the array itself when it already has that shape.

    Examples
    --------
    >>> resize_mask(np.arange(36, dtype=np.uint8).reshape(6, 6), 2)  # the centre of each 3x3 block
    array([[ 7, 10],
           [25, 28]], dtype=uint8)
    """
    if mask.shape == (size, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=MASK_INTERPOLATION)


def resize_tile(image: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize a square SEM tile and its mask to ``(size, size)``.

    Parameters
    ----------
    image : (T, T) uint8 ndarray
    mask : (T, T) uint8 ndarray or None
        Class ids; None resizes the image only.
    size : int

    Returns
    -------
    image : (size, size) uint8 ndarray
        See :func:`resize_image`.
    mask : (size, size) uint8 ndarray or None
        See :func:`resize_mask` (no invented classes).
    """
    return resize_image(image, size), None if mask is None else resize_mask(mask, size)
