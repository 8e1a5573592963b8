"""Input checks shared by the classical models (one message per mistake, with the shape)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mineralseg.errors import DataError


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``image`` as an ndarray; DataError unless it is a non-empty 2-D array of numbers."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"{what} must be a 2-D greyscale array, got shape {image.shape}")
    if image.size == 0:
        raise DataError(f"{what} is empty (shape {image.shape})")
    if image.dtype.kind not in "uif" or image.dtype == np.float16:
        raise DataError(f"{what} must hold numbers (uint/int/float32/float64), got dtype {image.dtype}")
    return image


def check_pairs(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label map) pairs, checked: one 2-D image or a sequence, same shapes, integer ids."""
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = [images]
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        labels = [labels]
    images, labels = list(images), list(labels)
    if not images:
        raise DataError("no training images given")
    if len(images) != len(labels):
        raise DataError(f"{len(images)} training images but {len(labels)} label maps")
    pairs = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        img = check_image(img, f"training image {i}")
        lab = np.asarray(lab)
        if lab.shape != img.shape:
            raise DataError(f"training image {i} has shape {img.shape} but its label map {lab.shape}")
        if lab.dtype.kind not in "iu":
            raise DataError(f"label map {i} must hold integer class ids, got dtype {lab.dtype}")
        pairs.append((img, lab))
    return pairs


def count_labels(pairs: list[tuple[np.ndarray, np.ndarray]], ignore_index: int) -> int:
    """Number of label classes (largest id + 1, ``ignore_index`` left out); DataError if none."""
    top = -1
    for i, (_, lab) in enumerate(pairs):
        kept = lab[lab != ignore_index]
        if kept.size:
            if kept.min() < 0:
                raise DataError(f"label map {i} holds negative class id {int(kept.min())}")
            top = max(top, int(kept.max()))
    if top < 0:
        raise DataError(f"the training label maps hold no labelled pixel (all are {ignore_index})")
    return top + 1
