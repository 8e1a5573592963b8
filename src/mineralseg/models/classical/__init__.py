"""Classical models for mineral segmentation: multi-Otsu and a pixel random forest.

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
They are models like the CNNs (``fit`` on training tiles, ``predict`` a class map), used
as the baselines of the quality benchmarks; :mod:`~mineralseg.models.classical.otsu` and
:mod:`~mineralseg.models.classical.random_forest` hold them, this ``__init__`` only
re-exports.
"""

from mineralseg.models.classical.otsu import (
    MultiOtsuClassifier,
    fit_otsu_mapping,
    multi_otsu_segment,
    multi_otsu_thresholds,
)
from mineralseg.models.classical.random_forest import RandomForestPixelClassifier

__all__ = [
    "MultiOtsuClassifier",
    "RandomForestPixelClassifier",
    "fit_otsu_mapping",
    "multi_otsu_segment",
    "multi_otsu_thresholds",
]
