"""Modal mineralogy: how much of a section each class covers.

The reason the study exists is to get QEMSCAN-like mineral fractions from SEM images
alone. A *modal mineralogy* is the share of the section's area taken by each class,
in pixels, in percent and, when the pixel size is known, in mm². Pixels of classes
that lie outside the rock (the mount: ``background``, ``epoxy``...) are counted apart
and left out of the area; pore space inside the section is a class like any other, and
its share is also reported as the porosity.

:func:`class_counts` counts the pixels of a class map (numpy in, numpy out; call it per
band of a big map and add the counts), :func:`modal_mineralogy` turns counts into a
:class:`ModalMineralogy`, and :func:`write_mineralogy` writes it as CSV and JSON.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.metrics import check_class_range
from mineralseg.io.atomic import atomic_path, write_json
from mineralseg.lookup import unknown_name_error

__all__ = [
    "EXCLUDED_NAMES",
    "PORE_NAMES",
    "ModalMineralogy",
    "check_class_names",
    "class_counts",
    "default_excluded_classes",
    "default_mount_classes",
    "default_pore_classes",
    "modal_mineralogy",
    "write_mineralogy",
]

# Class names taken as "outside the rock" by default: matched against the whole name
# split at '_', '-' and spaces (every word must be one of these), so 'epoxy_mount' is
# excluded and 'pores_background' (pore space inside the section, merged with the mount
# in the study's 4 groups) is not. Unlike prep's BACKGROUND_NAMES (which find the mount
# for registration), 'air' is not here: in the sandstone XRM phases it is the pores.
EXCLUDED_NAMES = ("background", "outside", "mount", "epoxy", "resin")
# Pore classes by default: a name containing 'pore' (pore, pores, pores_background), or
# exactly one of these.
PORE_NAMES = ("air", "porosity")
# Pixels per chunk in class_counts: bounds the int64 temporaries of np.bincount to
# about 32 MB whatever the size of the map.
_CHUNK_PIXELS = 1 << 22
# CSV / row columns, in order.
ROW_COLUMNS = ("class", "pixels", "area_percent", "area_mm2")


def class_counts(
    labels: np.ndarray,
    num_classes: int,
    *,
    mask: np.ndarray | None = None,
    ignore_index: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """Pixels of each class in a class map (inside ``mask``), ignoring ``ignore_index``.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Class ids ``0..num_classes-1``, or ``ignore_index`` for unknown pixels.
    num_classes : int
        Number of classes C (>= 1).
    mask : (H, W) bool ndarray, optional
        Only pixels where it is True are counted (e.g. the section, or the overlap of
        two maps). Default: every pixel.
    ignore_index : int or None
        Id that is not counted (default 255); None counts every id.

    Returns
    -------
    (C,) int64 ndarray
        ``np.bincount`` of the counted ids.

    Raises
    ------
    DataError
        ``labels`` is not a 2-D integer map, ``mask`` has another shape, or an id other
        than ``ignore_index`` lies outside ``0..C-1``.

    Notes
    -----
    Works in chunks of 4 M pixels: memory is the input plus about 32 MB. For a map too
    big for memory, count it band by band and add the results.

    Examples
    --------
    >>> class_counts(np.array([[0, 1, 1], [2, 255, 1]]), 3)
    array([1, 3, 1])
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes}")
    num_classes = int(num_classes)
    a = np.asarray(labels)
    if a.ndim != 2 or not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise DataError(f"class map must be a 2-D array of integer ids, got shape {a.shape} dtype {a.dtype}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise DataError(f"mask of shape {mask.shape} does not match the class map of shape {a.shape}")
    flat = a.reshape(-1)
    flat_mask = None if mask is None else mask.reshape(-1)
    counts = np.zeros(num_classes, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK_PIXELS):
        ids = flat[start : start + _CHUNK_PIXELS]
        keep = None if flat_mask is None else flat_mask[start : start + _CHUNK_PIXELS]
        if ignore_index is not None:
            known = ids != ignore_index
            keep = known if keep is None else keep & known
        if keep is not None and not keep.all():
            ids = ids[keep]
        if ids.size == 0:
            continue
        check_class_range(ids, num_classes, "class map")
        counts += np.bincount(ids.astype(np.intp, copy=False), minlength=num_classes)
    return counts


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w]


def default_pore_classes(class_names: Sequence[str]) -> tuple[str, ...]:
    """Names taken as pore space: containing 'pore', or equal to 'air' / 'porosity'.

    Examples
    --------
    >>> default_pore_classes(["pores_background", "quartz", "air", "porosity", "spore"])
    ('pores_background', 'air', 'porosity', 'spore')
    """
    return tuple(n for n in class_names if "pore" in n.lower() or n.strip().lower() in PORE_NAMES)


def default_excluded_classes(class_names: Sequence[str]) -> tuple[str, ...]:
    """Names taken as outside the rock: every word in :data:`EXCLUDED_NAMES`.

    Examples
    --------
    >>> default_excluded_classes(["pores_background", "background", "epoxy_mount", "quartz"])
    ('background', 'epoxy_mount')
    """
    return tuple(n for n in class_names if _words(n) and all(w in EXCLUDED_NAMES for w in _words(n)))


def default_mount_classes(class_names: Sequence[str]) -> tuple[str, ...]:
    """Classes the mount around the section belongs to, by default.

    The excluded classes (:func:`default_excluded_classes`) when there are any, else the
    pore classes (:func:`default_pore_classes`): palettes without a mount class of its
    own merge the mount with the pores ('pores_background' of the study's 4 groups,
    'air' of the sandstone XRM phases). Pore pixels inside the section outline stay
    pores; only those outside it are mount.

    Examples
    --------
    >>> default_mount_classes(["pore", "quartz", "background"])
    ('background',)
    >>> default_mount_classes(["pores_background", "quartz"])
    ('pores_background',)
    >>> default_mount_classes(["quartz", "clay"])
    ()
    """
    return default_excluded_classes(class_names) or default_pore_classes(class_names)


def check_class_names(given: Sequence[str] | str, names: Sequence[str], what: str) -> tuple[str, ...]:
    """``given`` class names without repeats, each one of ``names``.

    Raises
    ------
    ConfigError
        An unknown name, with the closest valid one ("did you mean ...") and the list.
    """
    if isinstance(given, str):
        given = [given]
    for n in given:
        if n not in names:
            raise unknown_name_error(what, n, names)
    return tuple(dict.fromkeys(given))


@dataclass(frozen=True)
class ModalMineralogy:
    """Area of each class inside a section.

    Attributes
    ----------
    class_names : tuple of str
        The counted classes (every class but the excluded ones), in class-id order.
    pixels : tuple of int
        Pixels of each counted class.
    area_percent : tuple of float
        ``100 * pixels / section_pixels``: sums to 100.
    section_pixels : int
        Pixels of all counted classes together (the section).
    porosity_percent : float or None
        Share of the pore classes in the section; None when there is no pore class.
    pore_classes : tuple of str
        Classes counted as pore space.
    excluded_classes : tuple of str
        Classes outside the rock (mount), left out of the section.
    pixel_size_um : float or None
        Side of one pixel in micrometres, when known.
    area_mm2 : tuple of float or None
        Area of each counted class in mm² (None without a pixel size).
    uncertain_pixels : int or None
        Pixels of the section whose prediction is uncertain (as the caller decided).
    uncertain_percent : float or None
        Their share of the section.
    """

    class_names: tuple[str, ...]
    pixels: tuple[int, ...]
    area_percent: tuple[float, ...]
    section_pixels: int
    porosity_percent: float | None
    pore_classes: tuple[str, ...]
    excluded_classes: tuple[str, ...]
    pixel_size_um: float | None
    area_mm2: tuple[float, ...] | None
    uncertain_pixels: int | None
    uncertain_percent: float | None

    @property
    def section_area_mm2(self) -> float | None:
        """Area of the section in mm² (None without a pixel size)."""
        if self.pixel_size_um is None:
            return None
        return self.section_pixels * (self.pixel_size_um * 1e-3) ** 2

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per counted class: ``class``, ``pixels``, ``area_percent``, ``area_mm2``."""
        mm2 = self.area_mm2 if self.area_mm2 is not None else (None,) * len(self.class_names)
        return [
            {"class": n, "pixels": p, "area_percent": a, "area_mm2": m}
            for n, p, a, m in zip(self.class_names, self.pixels, self.area_percent, mm2)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the rows and every summary field."""
        return {
            "classes": self.to_rows(),
            "section_pixels": self.section_pixels,
            "section_area_mm2": self.section_area_mm2,
            "porosity_percent": self.porosity_percent,
            "pore_classes": list(self.pore_classes),
            "excluded_classes": list(self.excluded_classes),
            "pixel_size_um": self.pixel_size_um,
            "uncertain_pixels": self.uncertain_pixels,
            "uncertain_percent": self.uncertain_percent,
        }


def modal_mineralogy(
    counts: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    *,
    pore_classes: Sequence[str] | None = None,
    excluded_classes: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    uncertain_pixels: int | None = None,
) -> ModalMineralogy:
    """Area shares of the classes inside the section, from pixel counts.

    Parameters
    ----------
    counts : (C,) sequence of int
        Pixels of each class (:func:`class_counts`).
    class_names : sequence of C str
        Class names in id order.
    pore_classes : sequence of str, optional
        Classes that are pore space. Default :func:`default_pore_classes` (names
        containing 'pore', or 'air' / 'porosity'); ``[]`` for none.
    excluded_classes : sequence of str, optional
        Classes outside the rock, left out of the area. Default
        :func:`default_excluded_classes` (background, mount, epoxy, outside, resin;
        not 'pores_background', which inside the section is pore space); ``[]`` for
        none. A class cannot be both pore and excluded.
    pixel_size_um : float, optional
        Pixel side in micrometres; gives the areas in mm².
    uncertain_pixels : int, optional
        Uncertain pixels inside the section; gives their share.

    Returns
    -------
    ModalMineralogy

    Raises
    ------
    UserError
        Counts and names differ in length, negative counts, an unknown class name
        (with the closest valid name), a non-positive pixel size, more uncertain
        pixels than the section has.
    DataError
        The section is empty: every pixel is excluded (or there is none).

    Examples
    --------
    >>> m = modal_mineralogy([50, 30, 20, 900], ["pore", "quartz", "clay", "background"])
    >>> m.class_names, m.area_percent, m.porosity_percent
    (('pore', 'quartz', 'clay'), (50.0, 30.0, 20.0), 50.0)
    """
    names = [str(n) for n in class_names]
    c = np.asarray(counts)
    if c.ndim != 1 or c.size != len(names):
        raise UserError(f"{c.size} pixel counts given for {len(names)} class names {names}")
    if len(set(names)) != len(names):
        raise UserError(f"class names must be unique, got {names}")
    if c.size and (not np.issubdtype(c.dtype, np.integer) or int(c.min()) < 0):
        raise UserError(f"pixel counts must be non-negative integers, got {c.tolist()}")
    c = c.astype(np.int64)
    if pore_classes is None:
        pores = default_pore_classes(names)
    else:
        pores = check_class_names(pore_classes, names, "pore class")
    if excluded_classes is None:
        excluded = tuple(n for n in default_excluded_classes(names) if n not in pores)
    else:
        excluded = check_class_names(excluded_classes, names, "excluded class")
    both = sorted(set(pores) & set(excluded))
    if both:
        raise UserError(f"class(es) {both} cannot be both pore space and excluded from the section")
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise UserError(f"pixel size must be a positive number of micrometres, got {pixel_size_um}")

    keep = [i for i, n in enumerate(names) if n not in excluded]
    kept_names = tuple(names[i] for i in keep)
    pixels = tuple(int(c[i]) for i in keep)
    section = int(sum(pixels))
    if section == 0:
        raise DataError(
            f"no pixels inside the section: {int(c.sum())} pixels counted, all of them in the excluded "
            f"classes {list(excluded)} (of {names}); check the class map, or pass excluded_classes"
        )
    percent = tuple(100.0 * p / section for p in pixels)
    porosity = None
    if pores:
        porosity = 100.0 * sum(int(c[names.index(n)]) for n in pores) / section
    area = None
    if pixel_size_um is not None:
        px_mm2 = (float(pixel_size_um) * 1e-3) ** 2
        area = tuple(p * px_mm2 for p in pixels)
    uncertain_percent = None
    if uncertain_pixels is not None:
        if int(uncertain_pixels) != uncertain_pixels or not 0 <= uncertain_pixels <= section:
            raise UserError(
                f"uncertain pixels must be an integer in 0..{section} (the section's pixels), got {uncertain_pixels}"
            )
        uncertain_pixels = int(uncertain_pixels)
        uncertain_percent = 100.0 * uncertain_pixels / section
    return ModalMineralogy(
        class_names=kept_names,
        pixels=pixels,
        area_percent=percent,
        section_pixels=section,
        porosity_percent=porosity,
        pore_classes=pores,
        excluded_classes=excluded,
        pixel_size_um=None if pixel_size_um is None else float(pixel_size_um),
        area_mm2=area,
        uncertain_pixels=uncertain_pixels,
        uncertain_percent=uncertain_percent,
    )


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """CSV of ``rows`` (dicts keyed by ``columns``); None becomes an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[k] is None else row[k] for k in columns])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``) as a CSV file, atomically."""
    text = _csv_text(columns, rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_mineralogy(m: ModalMineralogy, csv_path: str | os.PathLike, json_path: str | os.PathLike) -> None:
    """Write a modal mineralogy as CSV (one row per class) and JSON (:meth:`ModalMineralogy.to_dict`).

    Both files are written atomically: a failure leaves neither half-written.

    Parameters
    ----------
    m : ModalMineralogy
    csv_path : path-like
        Columns ``class, pixels, area_percent, area_mm2`` (``area_mm2`` empty without a
        pixel size).
    json_path : path-like
    """
    write_csv(csv_path, ROW_COLUMNS, m.to_rows())
    write_json(json_path, m.to_dict())
