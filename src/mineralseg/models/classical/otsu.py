"""Multi-Otsu thresholding with a brightness-class -> label mapping learnt on training images.

See :mod:`mineralseg.models.classical` for what the baseline can and cannot separate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.filters import threshold_multiotsu

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.models.classical._inputs import check_image, check_pairs, count_labels

# Histogram bins for multi-Otsu: one per grey level of a uint8 image. The search is
# O(nbins ** (n_classes - 1)), so more bins would only slow down 4- and 5-class runs.
OTSU_BINS = 256


# --------------------------------------------------------------------------- multi-Otsu
def _pooled_histogram(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None], nbins: int):
    """(counts, bin_centres) of the grey levels of several images on shared bins."""
    values = [img[m] if m is not None else img.ravel() for img, m in zip(images, masks)]
    values = [v for v in values if v.size]
    if not values:
        raise DataError("no pixel to threshold (empty images or masks)")
    if all(v.dtype == np.uint8 for v in values):
        counts = sum(np.bincount(v, minlength=256) for v in values)
        return counts, np.arange(256, dtype=np.float64)
    lo = min(float(v.min()) for v in values)
    hi = max(float(v.max()) for v in values)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, nbins + 1)
    counts = sum(np.histogram(v, bins=edges)[0] for v in values)
    return counts, (edges[:-1] + edges[1:]) / 2


def multi_otsu_thresholds(
    images: np.ndarray | Sequence[np.ndarray],
    n_classes: int,
    *,
    masks: np.ndarray | Sequence[np.ndarray | None] | None = None,
    nbins: int = OTSU_BINS,
) -> np.ndarray:
    """Multi-Otsu thresholds of one image, or of the pooled grey levels of several.

    Parameters
    ----------
    images : (H, W) ndarray or sequence of 2-D ndarrays
        Greyscale images (any real dtype; uint8 images are histogrammed exactly).
    n_classes : int
        Number of brightness classes (>= 2); ``n_classes - 1`` thresholds are returned.
    masks : (H, W) bool ndarray or sequence of them (or None), optional
        Pixels that count (e.g. the sample); default: all.
    nbins : int
        Histogram bins for non-uint8 images.

    Returns
    -------
    (n_classes - 1,) float64 ndarray
        Increasing thresholds; a pixel brighter than ``k`` of them is in class ``k``.

    Raises
    ------
    UserError
        ``n_classes`` < 2.
    DataError
        No pixel to threshold, or fewer distinct grey levels than classes.
    """
    if int(n_classes) != n_classes or n_classes < 2:
        raise UserError(f"n_classes must be an integer >= 2, got {n_classes}")
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images, masks = [images], [masks]
    images = [check_image(img) for img in images]
    if masks is None:
        masks = [None] * len(images)
    masks = list(masks)
    if len(masks) != len(images):
        raise DataError(f"{len(images)} images but {len(masks)} masks")
    masks = [None if m is None else np.asarray(m, dtype=bool) for m in masks]
    for img, m in zip(images, masks):
        if m is not None and m.shape != img.shape:
            raise DataError(f"mask of shape {m.shape} does not match image of shape {img.shape}")
    counts, centres = _pooled_histogram(images, masks, nbins)
    distinct = int(np.count_nonzero(counts))
    if distinct < n_classes:
        raise DataError(
            f"only {distinct} distinct grey levels for {n_classes} Otsu classes; use fewer classes"
        )
    return np.asarray(threshold_multiotsu(hist=(counts, centres), classes=int(n_classes)), dtype=np.float64)


def multi_otsu_segment(
    image: np.ndarray,
    n_classes: int,
    *,
    mask: np.ndarray | None = None,
    thresholds: np.ndarray | None = None,
) -> np.ndarray:
    """Brightness classes of an image by multi-Otsu thresholding.

    Parameters
    ----------
    image : (H, W) ndarray
        Greyscale image (any real dtype).
    n_classes : int
        Number of brightness classes (>= 2).
    mask : (H, W) bool ndarray, optional
        Pixels used to find the thresholds (e.g. the sample); every pixel is classified.
    thresholds : (n_classes - 1,) array, optional
        Use these thresholds instead of the image's own (e.g. from
        :func:`multi_otsu_thresholds` on training images).

    Returns
    -------
    (H, W) uint8 ndarray
        Class ids ``0..n_classes-1`` in order of brightness (0 darkest).

    Raises
    ------
    UserError / DataError
        See :func:`multi_otsu_thresholds`; thresholds of the wrong length.

    Examples
    --------
    >>> img = np.repeat(np.array([[10, 120, 240]], dtype=np.uint8), 4, axis=0)
    >>> multi_otsu_segment(img, 3)[0]
    array([0, 1, 2], dtype=uint8)
    """
    image = check_image(image)
    if thresholds is None:
        thresholds = multi_otsu_thresholds(image, n_classes, masks=mask)
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    if thresholds.size != n_classes - 1:
        raise UserError(f"{thresholds.size} thresholds given for {n_classes} classes (expected {n_classes - 1})")
    # As skimage's threshold_otsu (foreground = image > threshold): class k holds the
    # values above exactly k thresholds.
    return np.digitize(image, thresholds, right=True).astype(np.uint8)


def fit_otsu_mapping(
    train_images: Sequence[np.ndarray],
    train_labels: Sequence[np.ndarray],
    n_classes: int,
    *,
    thresholds: np.ndarray | None = None,
    n_labels: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Map each Otsu brightness class to the label class it overlaps most in training.

    Every training image is split into brightness classes (with its own thresholds,
    or with ``thresholds`` when given) and the pixels of each (brightness class,
    label class) pair are counted over all training images; brightness class ``k``
    then takes the label class with the most pixels in it. Only the training labels
    are used, so the mapping is fair to apply to test images. Label classes that no
    brightness class wins are never predicted.

    Parameters
    ----------
    train_images : sequence of (H, W) ndarrays
        Greyscale training images.
    train_labels : sequence of (H, W) int ndarrays
        Class ids, ``ignore_index`` for unlabelled pixels (not counted).
    n_classes : int
        Number of Otsu brightness classes.
    thresholds : (n_classes - 1,) array, optional
        Shared thresholds for all images (default: each image's own).
    n_labels : int, optional
        Number of label classes (default: largest id found + 1).
    ignore_index : int

    Returns
    -------
    (n_classes,) uint8 ndarray
        ``lut[k]`` = label class of brightness class ``k``; a brightness class
        without labelled training pixels gets the most frequent label class.

    Raises
    ------
    DataError
        Mismatched shapes, non-integer labels, no labelled pixel.
    """
    pairs = check_pairs(train_images, train_labels)
    n_lab = count_labels(pairs, ignore_index) if n_labels is None else int(n_labels)
    counts = np.zeros((n_classes, n_lab), dtype=np.int64)
    for i, (img, lab) in enumerate(pairs):
        otsu = multi_otsu_segment(img, n_classes, thresholds=thresholds)
        keep = lab != ignore_index
        t, o = lab[keep].astype(np.int64), otsu[keep].astype(np.int64)
        if t.size and t.max() >= n_lab:
            raise DataError(f"label map {i} holds class id {int(t.max())}, but n_labels is {n_lab}")
        counts += np.bincount(o * n_lab + t, minlength=n_classes * n_lab).reshape(n_classes, n_lab)
    lut = counts.argmax(axis=1)
    empty = counts.sum(axis=1) == 0
    lut[empty] = counts.sum(axis=0).argmax()
    return lut.astype(np.uint8)


class MultiOtsuClassifier:
    """Multi-Otsu thresholds + the training-set mapping of brightness classes to labels.

    Parameters
    ----------
    n_classes : int
        Number of brightness classes (usually the number of label classes).
    shared_thresholds : bool
        False (default): every image is thresholded on its own histogram (robust to
        a brightness change between images; needs whole images with all phases).
        True: thresholds found once on the pooled training pixels and applied to
        every image (for small tiles, which may show one or two phases only).

    Attributes
    ----------
    lut_ : (n_classes,) uint8 ndarray
        Label class of each brightness class (after :meth:`fit`).
    thresholds_ : ndarray or None
        The shared thresholds (``shared_thresholds=True`` only).

    Examples
    --------
    >>> img = np.repeat(np.array([[10, 120, 240]], dtype=np.uint8), 4, axis=0)
    >>> lab = np.repeat(np.array([[2, 0, 1]], dtype=np.uint8), 4, axis=0)
    >>> MultiOtsuClassifier(3).fit([img], [lab]).predict(img)[0]
    array([2, 0, 1], dtype=uint8)
    """

    def __init__(self, n_classes: int, *, shared_thresholds: bool = False) -> None:
        if int(n_classes) != n_classes or n_classes < 2:
            raise UserError(f"n_classes must be an integer >= 2, got {n_classes}")
        self.n_classes = int(n_classes)
        self.shared_thresholds = bool(shared_thresholds)
        self.lut_: np.ndarray | None = None
        self.thresholds_: np.ndarray | None = None

    def fit(
        self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, ignore_index: int = IGNORE_INDEX
    ) -> MultiOtsuClassifier:
        """Learn the brightness -> label mapping (and shared thresholds) on training data."""
        pairs = check_pairs(images, labels)
        imgs = [p[0] for p in pairs]
        labs = [p[1] for p in pairs]
        self.thresholds_ = multi_otsu_thresholds(imgs, self.n_classes) if self.shared_thresholds else None
        self.lut_ = fit_otsu_mapping(imgs, labs, self.n_classes, thresholds=self.thresholds_, ignore_index=ignore_index)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 label class ids of an (H, W) image."""
        if self.lut_ is None:
            raise UserError("MultiOtsuClassifier.predict called before fit")
        return self.lut_[multi_otsu_segment(image, self.n_classes, thresholds=self.thresholds_)]
