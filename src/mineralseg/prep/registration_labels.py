"""Register a label map (QEMSCAN) onto another class map (a prediction from SEM).

:mod:`mineralseg.prep.registration` aligns a label map with the grey SEM image it was
measured on. To compare a QEMSCAN map with a map *predicted* from the SEM, the QEMSCAN
must be aligned with the prediction instead: both are class maps, the QEMSCAN on a
coarse grid (about 19 SEM pixels per QEMSCAN pixel in the study), possibly rotated,
shifted and scaled, the prediction on the fine SEM (or working) grid.

The two maps are brought into the form the SEM registration works on, then registered
by it (outline moments for the coarse similarity, ECC on an image pyramid for the
affine refinement, normalised mutual information as the score):

1. *Section outlines.* The section is the largest region of non-mount classes with its
   holes filled (:func:`mineralseg.prep.outline.label_sample_mask`), in both maps; for a
   big prediction on a mode-downscaled copy (:data:`MASK_MAX_SIDE` px a side).
2. *Mount apart from pores.* In the study's 4 groups the mount and the pores are one
   class (``pores_background``); its pixels outside the outline become a mount id of
   their own in the QEMSCAN map, and black in the rendered prediction.
3. *Rendered prediction.* Every class inside the section gets a distinct bright grey
   (:func:`class_levels`), the mount black: an image of the kind an SEM is (dark mount,
   brighter section), rendered strip by strip as the registration reads it, so a
   prediction of any size is never held as floats.

The result is a :class:`~mineralseg.prep.registration.RegistrationResult` whose
``matrix`` follows the ``label_to_sem`` convention of docs/CONTRACTS.md with the
prediction in place of the SEM: ``[x_pred, y_pred, 1] = M @ [x_lab, y_lab, 1]``, pixel
centres at integer coordinates. :func:`warp_labels` resamples the label map onto rows
of the prediction grid through it (nearest neighbour).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

import mineralseg.io as mio
from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.prep.outline import label_sample_mask
from mineralseg.prep.registration import RegistrationOptions, RegistrationResult, register_labels_to_sem

__all__ = [
    "MASK_MAX_SIDE",
    "MAX_SECTION_SHARE",
    "SectionMask",
    "class_levels",
    "register_label_maps",
    "section_mask",
    "warp_labels",
]

# Longest side of the mode-downscaled prediction whose section outline is found: a
# 4,096 px outline is placed to a fraction of a QEMSCAN pixel (4,700 px a side in the
# study), and the fill of holes on it costs a few hundred MB at most.
MASK_MAX_SIDE = 4096
# Grey levels of the rendered prediction: the mount is MOUNT_LEVEL, the classes inside
# the section are spread over CLASS_LEVELS, far above it (Otsu's threshold of the
# registration's outline step then falls between mount and section whatever the class
# shares; the SEM registration expects a dark mount and a brighter section).
MOUNT_LEVEL = 0.0
CLASS_LEVELS = (100.0, 255.0)
# A map whose section covers more than this share of its frame has no mount to find an
# outline against: rock from edge to edge, the "mount" pixels being pores cut by the
# frame (a round section in a square frame leaves 21 % of mount, the study's 4,700 px
# maps 10-30 %).
MAX_SECTION_SHARE = 0.95
METHOD = "section outlines (similarity) + ECC affine on the rendered class map"


def class_levels(num_classes: int) -> np.ndarray:
    """(256,) float32 look-up: class id -> grey level of the rendered prediction.

    Ids ``0..num_classes-1`` are spread evenly over :data:`CLASS_LEVELS`; every other id
    (the ignore index, the mount) is :data:`MOUNT_LEVEL`.

    Examples
    --------
    >>> class_levels(3)[:4].tolist()
    [100.0, 177.5, 255.0, 0.0]
    """
    if not 1 <= int(num_classes) <= 255:
        raise UserError(f"num_classes must lie in 1..255, got {num_classes}")
    lut = np.full(256, MOUNT_LEVEL, dtype=np.float32)
    lo, hi = CLASS_LEVELS
    n = int(num_classes)
    lut[:n] = lo + (hi - lo) * np.arange(n, dtype=np.float32) / max(n - 1, 1)
    return lut


@dataclass(frozen=True)
class SectionMask:
    """Where the section is, on a grid ``step`` times coarser than its class map.

    Attributes
    ----------
    mask : (h, w) bool ndarray
        True inside the section; pixel ``(i, j)`` covers map pixels
        ``[i step, (i + 1) step) x [j step, (j + 1) step)``.
    step : int
        Map pixels per mask pixel (>= 1).
    """

    mask: np.ndarray
    step: int

    @property
    def share(self) -> float:
        """Fraction of the map inside the section."""
        return float(self.mask.mean())

    def rows(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """(r1 - r0, c1 - c0) bool: the mask at full resolution over map rows and columns."""
        s = self.step
        h, w = self.mask.shape
        return self.mask[
            np.minimum(np.arange(r0, r1) // s, h - 1)[:, None], np.minimum(np.arange(c0, c1) // s, w - 1)[None, :]
        ]


def section_mask(
    ids: Any, background_ids: Iterable[int], *, ignore_index: int | None = IGNORE_INDEX, what: str = "class map"
) -> SectionMask:
    """The section of a (big) class map: non-mount classes, largest region, holes filled.

    Parameters
    ----------
    ids : (H, W) uint8 array-like
        Class map (ndarray or lazy image), read in strips.
    background_ids : iterable of int
        Classes of the mount. Unknown pixels (``ignore_index``) count as mount too (a
        prediction may leave the outside of the section unknown).
    ignore_index : int or None
    what : str
        Name of the map in error messages.

    Returns
    -------
    SectionMask
        On a mode-downscaled copy at most :data:`MASK_MAX_SIDE` px a side.

    Raises
    ------
    DataError
        No section (every pixel mount or unknown, or the largest region under 1 % of it).
    """
    h, w = int(ids.shape[0]), int(ids.shape[1])
    step = max(1, math.ceil(max(h, w) / MASK_MAX_SIDE))
    small = mio.downscale_mode(ids, step, ignore_index=ignore_index) if step > 1 else np.asarray(ids[0:h, 0:w])
    mount = [int(b) for b in background_ids]
    if ignore_index is not None:
        mount.append(int(ignore_index))
    try:
        mask = label_sample_mask(small, mount, ignore_index=None)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    return SectionMask(mask=mask, step=step)


class _RenderedClasses:
    """A class map seen as a float32 image: class levels inside the section, mount black.

    Sliced like an array (``view[r0:r1, c0:c1]``) by the SEM registration, which reads
    it in strips.
    """

    def __init__(self, ids: Any, lut: np.ndarray, mount: np.ndarray, section: SectionMask):
        self._ids, self._lut, self._mount, self._section = ids, lut, mount, section
        self.shape = (int(ids.shape[0]), int(ids.shape[1]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        ids = np.asarray(self._ids[r0:r1, c0:c1])
        out = self._lut[ids]
        out[self._mount[ids] & ~self._section.rows(r0, r1, c0, c1)] = MOUNT_LEVEL
        return out


def _check_ids(ids: Any, what: str) -> tuple[int, int]:
    shape = tuple(getattr(ids, "shape", ()))
    dtype = np.dtype(getattr(ids, "dtype", np.float64))
    if len(shape) != 2 or not (np.issubdtype(dtype, np.integer) and dtype.itemsize == 1):
        raise DataError(f"{what} must be a 2-D uint8 class map, got shape {shape} dtype {dtype}")
    return int(shape[0]), int(shape[1])


def register_label_maps(
    labels: np.ndarray,
    target: Any,
    *,
    num_classes: int,
    background_ids: Iterable[int],
    ignore_index: int | None = IGNORE_INDEX,
    max_rotation_deg: float = 3.0,
    target_name: str = "target class map",
    target_section: SectionMask | None = None,
) -> RegistrationResult:
    """Estimate the affine transform of a coarse label map onto a fine class map.

    Parameters
    ----------
    labels : (h, w) uint8 ndarray
        The map to place (QEMSCAN ids, repaired), with the same class ids as ``target``.
    target : (H, W) uint8 array-like
        The reference class map (a prediction): an ndarray or a lazy image with 2-D
        slicing (:func:`mineralseg.io.open_image`), read in strips. Usually finer than
        ``labels``.
    num_classes : int
        Class ids are ``0..num_classes-1`` (plus ``ignore_index``).
    background_ids : iterable of int
        Classes the mount outside the section belongs to (``background``, or
        ``pores_background`` in the study's 4 groups). Pixels of these classes that lie
        inside the section outline are kept as they are (pores).
    ignore_index : int or None
        Unknown id in either map (left out; in ``target`` it counts as mount).
    max_rotation_deg : float
        Rotation range searched (round sections) or accepted (elongated sections).
    target_name : str
        How error messages call ``target`` (e.g. its path).
    target_section : SectionMask, optional
        The section of ``target`` if already known (:func:`section_mask` with the same
        ``background_ids``); saves a pass over ``target``.

    Returns
    -------
    RegistrationResult
        ``matrix`` maps label pixels to ``target`` pixels (``label_to_sem`` convention);
        ``score_*`` are normalised mutual informations of label ids and the rendered
        target (0..1) for the stretched, the outline and the final alignment.

    Raises
    ------
    DataError
        Not 2-D uint8 maps, no background class, no section in either map, a target
        without mount around its section, outlines that cannot be matched, no
        correlation.

    Notes
    -----
    Memory: the label map a few times over, the target's section mask at most
    :data:`MASK_MAX_SIDE` px a side, and what
    :func:`~mineralseg.prep.registration.register_labels_to_sem` needs (the target
    area-downscaled to a little finer than the label grid). Time: two passes over the
    target (mask, then downscale) plus the ECC refinement on the label grid.

    Examples
    --------
    >>> from mineralseg.synth import generate_sample
    >>> from mineralseg.prep.registration import corner_error
    >>> s = generate_sample(1, size=768, ratio=8, damage=False)
    >>> fine, coarse = s.schema.to_groups(s.truth), s.schema.to_groups(s.labels_clean)
    >>> r = register_label_maps(coarse, fine, num_classes=4, background_ids=[0])
    >>> corner_error(r.matrix, s.label_to_sem, coarse.shape) < 0.5
    True
    """
    _check_ids(labels, "label map")
    _check_ids(target, "target class map")
    labels = np.asarray(labels)
    n = int(num_classes)
    background = sorted({int(b) for b in background_ids})
    if not background:
        raise DataError(
            "cannot find the section outline: no class is the mount (background); if both maps cover the "
            "same field, compare them without registration (--no-register)"
        )
    if any(not 0 <= b < n for b in background):
        raise UserError(f"background ids {background} must lie in 0..{n - 1}")
    mount_id = n
    if mount_id == ignore_index or mount_id > 255:
        raise UserError(f"too many classes ({n}) to register: ids up to {n} must fit in uint8 besides {ignore_index}")

    known = labels if ignore_index is None else labels[labels != ignore_index]
    if known.size and int(known.max()) >= n:
        raise DataError(f"label map holds class id {int(known.max())}, outside 0..{n - 1} (num_classes={n})")
    label_section = label_sample_mask(labels, background, ignore_index=ignore_index)
    moving = labels.copy()
    moving[np.isin(labels, background) & ~label_section] = mount_id

    section = target_section or section_mask(target, background, ignore_index=ignore_index, what=target_name)
    share = section.share
    if share > MAX_SECTION_SHARE:
        raise DataError(
            f"{target_name} of shape {tuple(target.shape)} is section from edge to edge "
            f"({100 * share:.1f} % of it): there is no mount to place the outline against; if both maps cover "
            "the same field, compare them without registration (--no-register)"
        )
    mount = np.zeros(256, dtype=bool)
    mount[background] = True
    if ignore_index is not None:
        mount[ignore_index] = True
    rendered = _RenderedClasses(target, class_levels(n), mount, section)
    try:
        result = register_labels_to_sem(
            rendered, moving, background_ids=[mount_id], ignore_index=ignore_index,
            options=RegistrationOptions(max_rotation_deg=max_rotation_deg),
        )
    except DataError as exc:  # its words are about an SEM: say which maps these were
        raise DataError(
            f"registering the label map onto {target_name} (rendered as an image) failed: {exc}; if both maps "
            "cover the same field, compare them without registration (--no-register)"
        ) from None
    return dataclasses.replace(result, method=METHOD)


def warp_labels(
    labels: np.ndarray,
    label_to_target: Any,
    rows: tuple[int, int],
    width: int,
    *,
    fill: int = IGNORE_INDEX,
) -> np.ndarray:
    """The label map resampled (nearest) onto rows ``r0..r1-1`` of the target grid.

    Parameters
    ----------
    labels : (h, w) uint8 ndarray
    label_to_target : (3, 3) array-like
        ``[x_t, y_t, 1] = M @ [x_lab, y_lab, 1]`` (:func:`register_label_maps`).
    rows : (int, int)
        First and past-the-last target row.
    width : int
        Target width W.
    fill : int
        Value where the nearest label pixel lies outside the label map.

    Returns
    -------
    (r1 - r0, W) uint8 ndarray
        Each target pixel takes the label pixel nearest to ``M^-1 @ [x, y, 1]``.

    Examples
    --------
    >>> lab = np.array([[1, 2], [3, 4]], np.uint8)
    >>> warp_labels(lab, [[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]], (0, 4), 4)  # 2x finer grid
    array([[1, 1, 2, 2],
           [1, 1, 2, 2],
           [3, 3, 4, 4],
           [3, 3, 4, 4]], dtype=uint8)
    """
    m = np.asarray(label_to_target, dtype=np.float64)
    if m.shape != (3, 3):
        raise UserError(f"label_to_target must be a 3x3 matrix, got shape {m.shape}")
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    r0, r1 = int(rows[0]), int(rows[1])
    if r1 <= r0 or width < 1:
        return np.zeros((max(r1 - r0, 0), max(int(width), 0)), dtype=np.uint8)
    # target pixel (x, y) of the strip is (x, y + r0) on the whole grid
    strip_to_label = np.linalg.inv(m) @ np.array([[1.0, 0.0, 0.0], [0.0, 1.0, float(r0)], [0.0, 0.0, 1.0]])
    return cv2.warpAffine(
        labels, strip_to_label[:2], (int(width), r1 - r0),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=int(fill),
    )

