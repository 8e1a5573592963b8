"""Unit tests of SEM grey-level normalisation (prep/intensity.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mineralseg.prep.intensity import fit_drift, normalise_sem


def _rock(seed: int, size: int = 768, drift: np.ndarray | None = None):
    """Three phases (grey 60 / 120 / 180 + noise) in a disk on a dark mount."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 5)
    phase = (field > 0.02).astype(int) + (field > 0.07)
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    grey = np.array([60.0, 120.0, 180.0])[phase] + rng.normal(0, 6, (size, size))
    if drift is not None:
        grey = grey + drift
    img = np.where(mask, grey, 12).clip(0, 255).astype(np.uint8)
    return img, mask, phase


def test_normalise_removes_constant_offset():
    img, mask, _ = _rock(0)
    shifted = img.copy()
    shifted[mask] = np.clip(img[mask].astype(int) + 16, 0, 255).astype(np.uint8)
    out_a, pa = normalise_sem(img, mask)
    out_b, pb = normalise_sem(shifted, mask)
    assert abs(float(np.median(out_a[mask])) - float(np.median(out_b[mask]))) <= 1
    assert pb["low_value"] - pa["low_value"] == pytest.approx(16, abs=1.5)
    assert out_a.dtype == np.uint8
    # the percentile stretch spans the range inside the sample
    assert np.percentile(out_a[mask], 0.1) <= 2 and np.percentile(out_a[mask], 99.9) >= 253


def test_normalise_removes_slow_drift():
    size = 768
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1  # -1..1
    drift = 12 * xx + 10 * yy**2
    img, mask, phase = _rock(1, size, drift)
    out, params = normalise_sem(img, mask)
    raw, _ = normalise_sem(img, mask, drift=False)
    assert params["drift"]["coef"][1] == pytest.approx(12, abs=1.0)  # x term
    assert params["drift"]["coef"][5] == pytest.approx(10, abs=1.0)  # y**2 term
    left, right = xx < -0.3, xx > 0.3
    for k in range(3):
        sel = mask & (phase == k)
        corrected = abs(out[sel & left].mean() - out[sel & right].mean())
        uncorrected = abs(raw[sel & left].mean() - raw[sel & right].mean())
        assert corrected < 1.5 < 10 < uncorrected


def test_drift_fit_ignores_composition_gradient():
    """More bright phase on one side moves block means, not the histogram peaks."""
    img, mask, phase = _rock(2)
    size = img.shape[0]
    xx = np.mgrid[:size, :size][1]
    # turn most of the dark phase of the right half into the bright phase
    flip = (phase == 0) & (xx > size / 2) & mask
    img2 = img.copy()
    img2[flip] = np.clip(img[flip].astype(int) + 120, 0, 255)
    fit = fit_drift(img2, mask)
    assert fit is not None and fit["amplitude"] < 2.0
    assert img2[mask & (xx > size / 2)].mean() - img2[mask & (xx < size / 2)].mean() > 20


def test_normalise_edge_cases():
    const = np.full((64, 64), 77, np.uint8)
    out, params = normalise_sem(const, drift=False)
    assert np.all(out == 128) and params["high_value"] == params["low_value"]
    img, mask, _ = _rock(3, 256)
    out, _ = normalise_sem(img, mask, outside="zero")
    assert np.all(out[~mask] == 0)
    with pytest.raises(ValueError, match="mask is empty"):
        normalise_sem(img, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        normalise_sem(img, mask[:10])
