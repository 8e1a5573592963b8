"""Pixel random forest on multi-scale intensity, edge and texture features (the ilastik way).

See :mod:`mineralseg.models.classical` for the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from skimage.feature import multiscale_basic_features
from skimage.util import img_as_float32

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.models.classical._inputs import check_image, check_pairs, count_labels

# Pixels per prediction block of the random forest (halo included): 2**21 pixels x 20
# float32 features = 160 MB of features, plus the forest's (pixels, classes) float64
# probabilities; a 90,000-pixel-wide SEM row strip still gets ~20 rows per block.
RF_BLOCK_PIXELS = 1 << 21

# Gaussian kernels of skimage.filters.gaussian reach 4 sigma (scipy's default
# truncate); the Sobel filter adds 1 pixel and the Hessian's two finite differences 2.
_GAUSS_TRUNCATE = 4.0
_DERIVATIVE_REACH = 3


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
        image = check_image(image)
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

        pairs = check_pairs(images, labels)
        count_labels(pairs, ignore_index)  # raises when nothing is labelled
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
        image = img_as_float32(check_image(image))
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
        image = check_image(image)
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
        image = check_image(image)
        out = np.empty(image.shape, dtype=np.uint8)
        for r0, r1, proba in self._blocks(image, block_rows):
            out[r0:r1] = self.classes_[proba.argmax(axis=-1)]
        return out
