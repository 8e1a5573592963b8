"""Sample outlines: where the polished section lies in the SEM image and in the label map.

A section is a round or rectangular piece of rock set in epoxy. In the SEM the epoxy
(the mount, and the pores, which are epoxy-filled) is dark and the minerals are
brighter; in the QEMSCAN label map the mount is the background class. The outline of
the section is the first thing both images agree on, so its moments (centroid, area,
second moments) give the initial similarity transform of the registration
(:mod:`mineralseg.prep.registration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import ConfigError, DataError

__all__ = [
    "MOUNT_BORDER_FRACTION",
    "OUTLINE_MODES",
    "OutlineShape",
    "border_share",
    "label_sample_mask",
    "labels_have_mount",
    "outline_shape",
    "section_mask",
    "sem_sample_mask",
]

# A "sample" smaller than this fraction of the image is debris or noise, not a section.
MIN_SAMPLE_FRACTION = 0.01
# Grey levels of a usable SEM span more than this fraction of their magnitude;
# below it the image is constant (blank frame, wrong file) and no outline exists.
MIN_RELATIVE_CONTRAST = 1e-3
# Smoothing before thresholding, as a fraction of the longest side: averages mineral
# texture and pores into one "rock" level without moving a straight edge.
SMOOTH_FRACTION = 0.004
# Brightest grey levels ignored by the threshold (pyrite and other heavy minerals
# would otherwise pull Otsu's threshold into the minerals).
BRIGHT_PERCENTILE = 99.5
# Otsu's separability (between-class / total variance of the smoothed image) needed to
# call the two classes "mount" and "section": a unimodal (noise-only) image gives
# 2/pi = 0.64, a uniform ramp 0.75; synthetic sections in epoxy give about 0.9 and a
# section 60 grey levels above the mount with 10-level texture about 0.97.
MIN_SEPARABILITY = 0.8
# The mount (epoxy) around a section is one region that runs along the image edge; the
# pores and dark grains that a tile of rock from edge to edge cuts at its edge touch it
# in many short pieces. ``auto`` outlines see a mount when the largest connected region
# outside the section covers at least this share of the image border (a section in
# epoxy: about 1; a 256-px sandstone tile of 20-50 % porosity: well below 0.5).
MOUNT_BORDER_FRACTION = 0.5
# How the section is found (the ``outline`` setting of prepare and predict):
# auto: the section's outline when there is a mount, every pixel otherwise;
# none: every pixel; labels: from the label map's background class; sem: from the SEM.
OUTLINE_MODES = ("auto", "none", "labels", "sem")


@dataclass(frozen=True)
class OutlineShape:
    """Moments of a sample mask, in the pixel coordinates of its grid.

    Attributes
    ----------
    centroid : (float, float)
        ``(x, y)`` = (column, row) of the centre of mass; pixel centres at integers.
    area : float
        Number of pixels in the mask.
    covariance : ((float, float), (float, float))
        Second central moments ``[[cov_xx, cov_xy], [cov_xy, cov_yy]]`` in pixels².
    """

    centroid: tuple[float, float]
    area: float
    covariance: tuple[tuple[float, float], tuple[float, float]]

    @property
    def orientation_deg(self) -> float:
        """Angle of the major axis from the x axis (towards +y), in [-90, 90)."""
        (cxx, cxy), (_, cyy) = self.covariance
        angle = 0.5 * math.degrees(math.atan2(2.0 * cxy, cxx - cyy))
        return (angle + 90.0) % 180.0 - 90.0

    @property
    def elongation(self) -> float:
        """sqrt(major / minor eigenvalue) of the covariance: 1 for a disk or a square."""
        lo, hi = np.linalg.eigvalsh(np.asarray(self.covariance, dtype=float))
        if lo <= 0:
            return math.inf
        return math.sqrt(hi / lo)

    @property
    def compactness(self) -> float:
        """``area / (4 pi sqrt(det covariance))``: 1 for an ellipse, 0.955 for a rectangle."""
        det = float(np.linalg.det(np.asarray(self.covariance, dtype=float)))
        if det <= 0:
            return 0.0
        return self.area / (4.0 * math.pi * math.sqrt(det))

    def rescaled(self, factor: float) -> "OutlineShape":
        """The same shape on a grid ``factor`` times finer.

        For a mask computed on an image area-downscaled by ``factor``: a small-grid
        pixel centre ``u`` lies at ``(u + 0.5) * factor - 0.5`` on the full grid.
        """
        f = float(factor)
        cx, cy = self.centroid
        cov = np.asarray(self.covariance, dtype=float) * f * f
        return OutlineShape(
            centroid=((cx + 0.5) * f - 0.5, (cy + 0.5) * f - 0.5),
            area=self.area * f * f,
            covariance=((cov[0, 0], cov[0, 1]), (cov[1, 0], cov[1, 1])),
        )


def outline_shape(mask: np.ndarray) -> OutlineShape:
    """Centroid, area and second moments of a boolean mask.

    Parameters
    ----------
    mask : (H, W) bool ndarray
        The sample (True) against the mount (False).

    Returns
    -------
    OutlineShape

    Raises
    ------
    DataError
        If the mask is empty.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DataError(f"sample mask must be 2-D, got shape {m.shape}")
    mom = cv2.moments(m.astype(np.uint8), binaryImage=True)
    area = mom["m00"]
    if area <= 0:
        raise DataError(f"sample mask of shape {m.shape} is empty")
    cx, cy = mom["m10"] / area, mom["m01"] / area
    cxx, cxy, cyy = mom["mu20"] / area, mom["mu11"] / area, mom["mu02"] / area
    return OutlineShape(centroid=(cx, cy), area=float(area), covariance=((cxx, cxy), (cxy, cyy)))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return comp == biggest


def _close(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    size = 2 * radius + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    # pad so that the closing does not glue the sample to the image border
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), size, size, size, size, cv2.BORDER_CONSTANT, value=0)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
    return closed[size:-size, size:-size].astype(bool)


def _check_fraction(mask: np.ndarray, min_fraction: float, what: str) -> None:
    fraction = float(mask.mean())
    if fraction < min_fraction:
        raise DataError(
            f"no sample found in the {what} of shape {mask.shape}: the largest region covers "
            f"{100 * fraction:.2f} % of the image (less than {100 * min_fraction:g} %)"
        )


def sem_sample_mask(
    img: np.ndarray,
    *,
    smooth_sigma: float | None = None,
    closing_radius: int = 2,
    min_fraction: float = MIN_SAMPLE_FRACTION,
) -> np.ndarray:
    """Where the section is in a (downscaled) SEM image.

    The image is smoothed, thresholded with Otsu's method (the brightest 0.5 % clipped
    so that heavy minerals do not pull the threshold), the largest connected region
    kept, closed and its holes filled (pores inside the section belong to the section).

    Parameters
    ----------
    img : (H, W) ndarray, any real dtype
        Backscatter image; the mount is darker than the section. Typically an SEM
        mosaic area-downscaled to about 1,000 pixels a side.
    smooth_sigma : float, optional
        Gaussian sigma in pixels; default ``0.004 * max(H, W)`` (at least 1).
    closing_radius : int
        Radius in pixels of the morphological closing that smooths the outline.
    min_fraction : float
        Smallest accepted sample area as a fraction of the image.

    Returns
    -------
    (H, W) bool ndarray
        True inside the section.

    Raises
    ------
    DataError
        If the image is not 2-D, is constant, has non-finite values, does not split
        into two grey-level classes (Otsu separability below 0.8: noise, no mount),
        or the largest bright region is smaller than ``min_fraction`` of the image.
    """
    a = np.asarray(img)
    if a.ndim != 2:
        raise DataError(f"SEM image must be 2-D greyscale, got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise DataError(f"SEM image of shape {a.shape} has NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= MIN_RELATIVE_CONTRAST * max(abs(lo), abs(hi), 1.0):
        raise DataError(f"no sample found in the SEM image of shape {a.shape}: it is constant ({lo:g})")
    sigma = smooth_sigma if smooth_sigma is not None else max(1.0, SMOOTH_FRACTION * max(a.shape))
    smooth = cv2.GaussianBlur(a, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    smooth = np.minimum(smooth, np.percentile(smooth, BRIGHT_PERCENTILE))
    if float(smooth.max()) <= float(smooth.min()):
        raise DataError(f"no sample found in the SEM image of shape {a.shape}: no contrast after smoothing")
    threshold = threshold_otsu(smooth)
    above = smooth > threshold
    p = float(above.mean())
    separability = p * (1 - p) * (float(smooth[above].mean()) - float(smooth[~above].mean())) ** 2 / float(smooth.var())
    if separability < MIN_SEPARABILITY:
        raise DataError(
            f"no sample found in the SEM image of shape {a.shape}: its grey levels do not split into a dark "
            f"mount and a brighter section (Otsu separability {separability:.2f} < {MIN_SEPARABILITY})"
        )
    mask = _largest_component(above)
    mask = ndimage.binary_fill_holes(_close(mask, closing_radius))
    _check_fraction(mask, min_fraction, "SEM image")
    return mask


def label_sample_mask(
    ids: np.ndarray,
    background_ids: Iterable[int],
    *,
    ignore_index: int | None = IGNORE_INDEX,
    min_fraction: float = MIN_SAMPLE_FRACTION,
) -> np.ndarray:
    """Where the section is in a label map: the largest non-background region, holes filled.

    Pixels equal to ``ignore_index`` (unknown, e.g. repaired seams) take the class of
    the nearest known pixel first, so that an unknown stripe across the section does
    not cut it in two.

    Parameters
    ----------
    ids : (H, W) integer ndarray
        Mineral (or group) ids.
    background_ids : iterable of int
        Ids of the mount / background outside the section.
    ignore_index : int or None
        Id of unknown pixels (None: no such id).
    min_fraction : float
        Smallest accepted sample area as a fraction of the map.

    Returns
    -------
    (H, W) bool ndarray

    Raises
    ------
    DataError
        If ``ids`` is not 2-D, or holds no sample (only background / unknown pixels,
        or a largest region under ``min_fraction`` of the map).
    """
    a = np.asarray(ids)
    if a.ndim != 2:
        raise DataError(f"label map must be 2-D ids, got shape {a.shape}")
    background = np.asarray(sorted({int(b) for b in background_ids}), dtype=np.int64)
    if ignore_index is not None:
        unknown = a == ignore_index
        if unknown.all():
            raise DataError(f"no sample found in the label map of shape {a.shape}: every pixel is {ignore_index}")
        if unknown.any():
            _, (rows, cols) = ndimage.distance_transform_edt(unknown, return_indices=True)
            a = a[rows, cols]
    sample = ~np.isin(a, background)
    if not sample.any():
        raise DataError(
            f"no sample found in the label map of shape {a.shape}: every pixel is background "
            f"(ids {background.tolist()})"
        )
    mask = ndimage.binary_fill_holes(_largest_component(sample))
    _check_fraction(mask, min_fraction, "label map")
    return mask


def border_share(outside: np.ndarray) -> float:
    """Share of the image border covered by the largest connected region of ``outside``.

    Parameters
    ----------
    outside : (H, W) bool ndarray
        Pixels outside the section (mount candidates).

    Returns
    -------
    float
        0..1: border pixels of the largest 8-connected ``outside`` region that touches
        the border, over all border pixels.
    """
    m = np.asarray(outside, bool)
    if m.ndim != 2 or min(m.shape) == 0:
        raise DataError(f"outside mask must be a non-empty 2-D array, got shape {m.shape}")
    n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    if n <= 1:
        return 0.0
    border = np.concatenate([comp[0], comp[-1], comp[1:-1, 0], comp[1:-1, -1]]) if m.shape[0] > 1 else comp[0]
    counts = np.bincount(border, minlength=n)
    counts[0] = 0  # label 0 is "not outside"
    return float(counts.max()) / border.size


def labels_have_mount(ids: np.ndarray, background_ids: Iterable[int]) -> bool:
    """Whether a label map shows a section in a mount (the ``auto`` outline).

    Parameters
    ----------
    ids : (H, W) integer ndarray
        Mineral (or group) ids.
    background_ids : iterable of int
        Ids of the classes named as the mount (background, air, epoxy, ...); empty when
        the schema has none.

    Returns
    -------
    bool
        True when the background classes are present and their largest region covers
        at least :data:`MOUNT_BORDER_FRACTION` of the map border.
    """
    background = sorted({int(b) for b in background_ids})
    if not background:
        return False
    return border_share(np.isin(np.asarray(ids), background)) >= MOUNT_BORDER_FRACTION


def section_mask(
    image: np.ndarray,
    mode: str = "auto",
    *,
    min_fraction: float = MIN_SAMPLE_FRACTION,
) -> np.ndarray:
    """Where the rock is in an SEM image, from the image alone.

    Parameters
    ----------
    image : (H, W) ndarray, any real dtype
        Backscatter image, e.g. an SEM mosaic area-downscaled to about 1,000 pixels a
        side (the outline is a coarse shape: a preview is enough, and faster).
    mode : {"auto", "none", "sem"}
        ``sem``: the section outline of :func:`sem_sample_mask` (raises when there is
        none). ``none``: every pixel. ``auto``: the outline when the image shows a
        section in a mount, every pixel otherwise. ``auto`` decides in two steps:
        (1) the grey levels must split into a dark and a brighter class (Otsu
        separability >= 0.8, as in :func:`sem_sample_mask`), else there is no mount;
        (2) the largest connected region outside the outline must cover at least
        :data:`MOUNT_BORDER_FRACTION` (half) of the image border: the epoxy around a
        section runs along the edge, while the pores of rock that fills the image
        touch it in short pieces only.
    min_fraction : float
        Smallest accepted section area as a fraction of the image (``sem`` and
        ``auto``).

    Returns
    -------
    (H, W) bool ndarray
        True inside the section (all True when there is no mount).

    Raises
    ------
    ConfigError
        Unknown ``mode`` (``labels`` needs a label map: see :func:`label_sample_mask`).
    DataError
        Not a 2-D image, non-finite values; with ``sem``, no outline found.

    Examples
    --------
    >>> rock = np.random.default_rng(0).integers(60, 200, (64, 64)).astype(np.uint8)
    >>> bool(section_mask(rock).all())
    True
    """
    a = np.asarray(image)
    if a.ndim != 2:
        raise DataError(f"SEM image must be 2-D greyscale, got shape {a.shape}")
    if mode not in ("auto", "none", "sem"):
        raise ConfigError(
            f"unknown outline mode {mode!r} for an SEM image; valid: auto, none, sem"
            + (" ('labels' needs a label map)" if mode == "labels" else "")
        )
    everything = np.ones(a.shape, bool)
    if mode == "none":
        return everything
    if not np.all(np.isfinite(a)):
        raise DataError(f"SEM image of shape {a.shape} has NaN or infinite values")
    if mode == "sem":
        return sem_sample_mask(a, min_fraction=min_fraction)
    try:
        mask = sem_sample_mask(a, min_fraction=min_fraction)
    except DataError:  # constant, no dark / bright split, or no sizeable bright region
        return everything
    if border_share(~mask) < MOUNT_BORDER_FRACTION:
        return everything
    return mask
