"""Classical baselines for mineral segmentation: multi-Otsu and a pixel random forest.

The CNNs of the project are only worth their training time if they beat what a user
gets without deep learning. Two classical methods set that bar:

Multi-Otsu thresholding (:func:`multi_otsu_segment`, :class:`MultiOtsuClassifier`)
    Splits the grey levels into ``n`` brightness classes that maximise the
    between-class variance (Liao et al. 2001, :func:`skimage.filters.threshold_multiotsu`).
    Brightness classes are not minerals: :func:`fit_otsu_mapping` gives each
    brightness class the label class it overlaps most **on the training images**, so
    the baseline never sees the test labels. Two minerals of the same brightness
    (or two brightness classes voting for the same mineral) leave a class with no
    pixels at all, and an IoU of 0: that is the baseline's honest weakness.

Pixel random forest (:class:`RandomForestPixelClassifier`)
    The ilastik approach: every pixel is described by Gaussian-smoothed intensity,
    gradient magnitude and Hessian eigenvalues at scales ``sigma_min .. sigma_max``
    (:func:`skimage.feature.multiscale_basic_features`), and a random forest
    (:class:`sklearn.ensemble.RandomForestClassifier`) learns the classes from a
    stratified random sample of the labelled training pixels. It sees texture, so it can
    separate two phases of equal mean brightness that Otsu cannot.

Everything is numpy in, numpy out; labels are integer class ids with
``ignore_index`` (255) for unlabelled pixels, which are never sampled for training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from skimage.feature import multiscale_basic_features
from skimage.filters import threshold_multiotsu
from skimage.util import img_as_float32

from mineralseg.errors import DataError, UserError

__all__ = [
    "MultiOtsuClassifier",
    "RandomForestPixelClassifier",
    "fit_otsu_mapping",
    "multi_otsu_segment",
    "multi_otsu_thresholds",
]

IGNORE_INDEX = 255  # label value of unlabelled pixels (as in mineralseg.evaluate.metrics)

# Histogram bins for multi-Otsu: one per grey level of a uint8 image. The search is
# O(nbins ** (n_classes - 1)), so more bins would only slow down 4- and 5-class runs.
OTSU_BINS = 256

# Pixels per prediction block of the random forest (halo included): 2**21 pixels x 20
# float32 features = 160 MB of features, plus the forest's (pixels, classes) float64
# probabilities; a 90,000-pixel-wide SEM row strip still gets ~20 rows per block.
RF_BLOCK_PIXELS = 1 << 21

# Gaussian kernels of skimage.filters.gaussian reach 4 sigma (scipy's default
# truncate); the Sobel filter adds 1 pixel and the Hessian's two finite differences 2.
_GAUSS_TRUNCATE = 4.0
_DERIVATIVE_REACH = 3


# --------------------------------------------------------------------------- validation
def _check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"{what} must be a 2-D greyscale array, got shape {image.shape}")
    if image.size == 0:
        raise DataError(f"{what} is empty (shape {image.shape})")
    if image.dtype.kind not in "uif" or image.dtype == np.float16:
        raise DataError(f"{what} must hold numbers (uint/int/float32/float64), got dtype {image.dtype}")
    return image


def _check_pairs(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
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
        img = _check_image(img, f"training image {i}")
        lab = np.asarray(lab)
        if lab.shape != img.shape:
            raise DataError(f"training image {i} has shape {img.shape} but its label map {lab.shape}")
        if lab.dtype.kind not in "iu":
            raise DataError(f"label map {i} must hold integer class ids, got dtype {lab.dtype}")
        pairs.append((img, lab))
    return pairs


def _n_labels(pairs: list[tuple[np.ndarray, np.ndarray]], ignore_index: int) -> int:
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
    images = [_check_image(img) for img in images]
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
    image = _check_image(image)
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
    pairs = _check_pairs(train_images, train_labels)
    n_lab = _n_labels(pairs, ignore_index) if n_labels is None else int(n_labels)
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
        pairs = _check_pairs(images, labels)
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


# --------------------------------------------------------------------------- random forest
class RandomForestPixelClassifier:
    """Per-pixel random forest on multi-scale intensity, edge and texture features.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Smallest and largest Gaussian scale in pixels; the scales are
        ``sigma_min * 2**k`` up to ``sigma_max`` (1..16: 5 scales, 20 features).
    n_estimators : int
        Trees in the forest.
    max_samples_per_class : int
        Training-pixel budget: ``max_samples_per_class * n_classes`` pixels in all
        (``n_classes`` = label classes present in training), shared out by ``sampling``.
    sampling : {"stratified", "balanced"}
        How the budget is shared out; within a class the pixels are drawn uniformly
        without replacement over all training images.
        ``stratified`` (default): in proportion to the class frequencies (at least one
        pixel per class), so the forest learns the true class prior;
        ``balanced``: up to ``max_samples_per_class`` pixels of every class, which
        over-predicts rare classes (on the sandstone validation slice: mean IoU 0.81
        against 0.92 for stratified with the same budget, clay 0.57 against 0.79).
    seed : int
        Seeds the pixel sampling and the forest.
    n_jobs : int
        Threads for the features and the forest (1 on a shared machine; -1 all cores).
    max_depth, min_samples_leaf : optional
        Passed to :class:`sklearn.ensemble.RandomForestClassifier`.

    Attributes
    ----------
    classes_ : (K,) ndarray
        Label classes seen in training (the values :meth:`predict` returns).
    n_features_ : int
        Features per pixel.
    n_train_pixels_ : dict
        Training pixels drawn per class.

    Notes
    -----
    :meth:`predict` works in row blocks of about :data:`RF_BLOCK_PIXELS` pixels, each
    with a halo of ``4 * sigma_max + 3`` rows so that its features equal those of the
    whole image: memory is bounded whatever the image size, and the result does not
    depend on the block size. Training computes the features of each training image
    the same way, block by block, and keeps only the sampled pixels.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = np.where(np.arange(64)[None, :] < 32, 60, 200) + rng.normal(0, 5, (64, 64))
    >>> lab = (np.arange(64)[None, :] >= 32).repeat(64, axis=0).astype(np.uint8)
    >>> rf = RandomForestPixelClassifier(n_estimators=10, max_samples_per_class=500)
    >>> float((rf.fit([img], [lab]).predict(img) == lab).mean()) > 0.95
    True
    """

    def __init__(
        self,
        sigma_min: float = 1,
        sigma_max: float = 16,
        n_estimators: int = 100,
        max_samples_per_class: int = 20_000,
        *,
        sampling: Literal["stratified", "balanced"] = "stratified",
        seed: int = 0,
        n_jobs: int = 1,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
    ) -> None:
        if not (0 < sigma_min <= sigma_max):
            raise UserError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        if n_estimators < 1:
            raise UserError(f"n_estimators must be >= 1, got {n_estimators}")
        if max_samples_per_class < 1:
            raise UserError(f"max_samples_per_class must be >= 1, got {max_samples_per_class}")
        if sampling not in ("stratified", "balanced"):
            raise UserError(f"sampling must be 'stratified' or 'balanced', got {sampling!r}")
        if n_jobs == 0:
            raise UserError("n_jobs must be a positive number of threads or -1 (all cores), got 0")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.n_estimators = int(n_estimators)
        self.max_samples_per_class = int(max_samples_per_class)
        self.sampling = sampling
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)
        self.max_depth = max_depth
        self.min_samples_leaf = int(min_samples_leaf)
        self.classes_: np.ndarray | None = None
        self.n_features_: int | None = None
        self.n_train_pixels_: dict[int, int] = {}
        self._forest = None

    # ---------------------------------------------------------------- features
    @property
    def halo(self) -> int:
        """Rows of context a prediction block needs on each side (exact features)."""
        return int(math.ceil(_GAUSS_TRUNCATE * self.sigma_max)) + _DERIVATIVE_REACH

    def _workers(self) -> int | None:
        return None if self.n_jobs < 0 else self.n_jobs

    def features(self, image: np.ndarray) -> np.ndarray:
        """Pixel features of an image.

        Parameters
        ----------
        image : (H, W) ndarray
            Greyscale image; integer images are scaled to 0..1 by their dtype's range
            (uint8 / 255), float images are used as they are.

        Returns
        -------
        (H, W, F) float32 ndarray
            For each scale: smoothed intensity, gradient magnitude (Sobel) and the two
            Hessian eigenvalues.
        """
        image = _check_image(image)
        return self._features(img_as_float32(image))

    def _features(self, image: np.ndarray) -> np.ndarray:
        return multiscale_basic_features(
            image, intensity=True, edges=True, texture=True,
            sigma_min=self.sigma_min, sigma_max=self.sigma_max, workers=self._workers(),
        ).astype(np.float32, copy=False)

    # ---------------------------------------------------------------- training
    def _draw_pixels(
        self, pairs: list[tuple[np.ndarray, np.ndarray]], ignore_index: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """Flat pixel indices to train on, per image (uniform without replacement per class)."""
        classes = sorted({int(c) for _, lab in pairs for c in np.unique(lab) if c != ignore_index})
        sizes = {c: np.array([int(np.count_nonzero(lab == c)) for _, lab in pairs]) for c in classes}
        totals = {c: int(sizes[c].sum()) for c in classes}
        if self.sampling == "stratified":
            # Proportional allocation of the whole budget; every class keeps at least
            # one pixel so that the forest knows it exists.
            budget = self.max_samples_per_class * len(classes)
            n_all = sum(totals.values())
            quota = {c: max(1, round(budget * totals[c] / n_all)) for c in classes}
        else:
            quota = {c: self.max_samples_per_class for c in classes}
        per_image: list[list[np.ndarray]] = [[] for _ in pairs]
        for c in classes:
            k = min(totals[c], quota[c])
            chosen = np.sort(rng.choice(totals[c], size=k, replace=False))
            starts = np.concatenate([[0], np.cumsum(sizes[c])])
            for i, (_, lab) in enumerate(pairs):
                local = chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
                if local.size:
                    per_image[i].append(np.flatnonzero(lab.ravel() == c)[local])
        return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in per_image]

    def fit(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        *,
        ignore_index: int = IGNORE_INDEX,
        progress: bool = False,
    ) -> RandomForestPixelClassifier:
        """Train on a random subsample of the labelled pixels of the training images.

        Parameters
        ----------
        images : sequence of (H, W) ndarrays
            Greyscale training images (shapes may differ between images).
        labels : sequence of (H, W) int ndarrays
            Class ids, ``ignore_index`` for unlabelled pixels (never drawn).
        ignore_index : int
        progress : bool
            Show a progress bar over the images.

        Returns
        -------
        self

        Raises
        ------
        DataError
            Mismatched shapes, non-integer labels, no labelled pixel, a single class.
        """
        from sklearn.ensemble import RandomForestClassifier
        from tqdm.auto import tqdm

        pairs = _check_pairs(images, labels)
        _n_labels(pairs, ignore_index)  # raises when nothing is labelled
        rng = np.random.default_rng(self.seed)
        picks = self._draw_pixels(pairs, ignore_index, rng)
        xs, ys = [], []
        bar = tqdm(list(zip(pairs, picks)), desc="rf features", disable=None if progress else True, leave=False)
        for (img, lab), idx in bar:
            if idx.size == 0:
                continue
            w = img.shape[1]
            for r0, r1, feats in self._feature_blocks(img, None):
                inside = idx[(idx >= r0 * w) & (idx < r1 * w)]  # idx is sorted, flat
                xs.append(feats.reshape(-1, feats.shape[-1])[inside - r0 * w])
            ys.append(lab.ravel()[idx])
        x = np.concatenate(xs)
        y = np.concatenate(ys)
        found = np.unique(y)
        if found.size < 2:
            raise DataError(f"the training labels hold a single class ({int(found[0])}); a classifier needs two")
        self._forest = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs, random_state=self.seed,
        )
        self._forest.fit(x, y)
        self.classes_ = self._forest.classes_.astype(np.int64)
        self.n_features_ = int(x.shape[1])
        self.n_train_pixels_ = {int(c): int(n) for c, n in zip(*np.unique(y, return_counts=True))}
        return self

    # ---------------------------------------------------------------- prediction
    def _feature_blocks(self, image: np.ndarray, block_rows: int | None):
        """Yield ``(r0, r1, features)`` of row blocks, (r1 - r0, W, F) float32 each.

        Each block is computed with ``halo`` rows of context on both sides, so its
        features equal the rows ``r0:r1`` of :meth:`features` of the whole image.
        """
        image = img_as_float32(_check_image(image))
        h, w = image.shape
        halo = self.halo
        if block_rows is None:
            block_rows = max(1, RF_BLOCK_PIXELS // w - 2 * halo)
        if block_rows < 1:
            raise UserError(f"block_rows must be >= 1, got {block_rows}")
        for r0 in range(0, h, block_rows):
            r1 = min(h, r0 + block_rows)
            a, b = max(0, r0 - halo), min(h, r1 + halo)
            yield r0, r1, self._features(image[a:b])[r0 - a : r1 - a]

    def _blocks(self, image: np.ndarray, block_rows: int | None):
        """Yield ``(r0, r1, proba)`` for row blocks; ``proba`` is (r1 - r0, W, K) float."""
        if self._forest is None:
            raise UserError("RandomForestPixelClassifier.predict called before fit")
        for r0, r1, feats in self._feature_blocks(image, block_rows):
            proba = self._forest.predict_proba(feats.reshape(-1, feats.shape[-1]))
            yield r0, r1, proba.reshape(r1 - r0, feats.shape[1], -1)

    def predict_proba(self, image: np.ndarray, *, block_rows: int | None = None) -> np.ndarray:
        """Class probabilities, computed in row blocks.

        Parameters
        ----------
        image : (H, W) ndarray
        block_rows : int, optional
            Rows per block (default: about :data:`RF_BLOCK_PIXELS` pixels per block,
            halo included).

        Returns
        -------
        (H, W, K) float32 ndarray
            Probability of each class of :attr:`classes_`.
        """
        image = _check_image(image)
        out = np.empty(image.shape + (0 if self.classes_ is None else len(self.classes_),), dtype=np.float32)
        for r0, r1, proba in self._blocks(image, block_rows):
            out[r0:r1] = proba
        return out

    def predict(self, image: np.ndarray, *, block_rows: int | None = None) -> np.ndarray:
        """Class ids of an image, computed in row blocks (see :meth:`predict_proba`).

        Returns
        -------
        (H, W) uint8 ndarray
            Values of :attr:`classes_`; memory stays at one block of features and
            probabilities whatever the image size.
        """
        image = _check_image(image)
        out = np.empty(image.shape, dtype=np.uint8)
        for r0, r1, proba in self._blocks(image, block_rows):
            out[r0:r1] = self.classes_[proba.argmax(axis=-1)]
        return out
