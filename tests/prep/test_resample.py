"""Unit tests of the working grid (prep/resample.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mineralseg.prep.resample import (
    labels_to_working_grid,
    sem_coverage,
    sem_to_working_grid,
    working_shape,
    working_to_label_matrix,
)


class _CountingImage:
    """An ndarray wrapper that records the size of every window read."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.reads = a, a.shape, []

    def __getitem__(self, key):
        out = self.a[key]
        self.reads.append(out.size)
        return out


def _affine(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t) * scale, np.sin(t) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])


@pytest.mark.parametrize("sem_scale", [1, 2, 2.5])
def test_sem_to_working_grid_follows_the_transform(sem_scale):
    """A linear SEM ramp is reproduced exactly (area average and bilinear keep linear functions)."""
    hs, ws = 1500, 1400
    yy, xx = np.mgrid[:hs, :ws]
    sem = _CountingImage((0.05 * xx + 0.03 * yy + 7).astype(np.float32))
    m = _affine(7.3, 0.6, -40.2, 25.7)  # the left edge of the map falls outside the SEM
    label_shape = (190, 180)
    budget = 1 << 18
    out = sem_to_working_grid(sem, m, label_shape, sem_scale, max_window_pixels=budget)
    assert out.shape == working_shape(label_shape, sem_scale) and out.dtype == np.float32
    w2s = m @ working_to_label_matrix(sem_scale)
    v, u = np.mgrid[: out.shape[0], : out.shape[1]]
    x = w2s[0, 0] * u + w2s[0, 1] * v + w2s[0, 2]
    y = w2s[1, 0] * u + w2s[1, 1] * v + w2s[1, 2]
    inner = (x > 10) & (y > 10) & (x < ws - 11) & (y < hs - 11)
    assert inner.mean() > 0.9
    np.testing.assert_allclose(out[inner], (0.05 * x + 0.03 * y + 7)[inner], atol=1e-3)
    outside = (x < -0.5) | (y < -0.5) | (x > ws - 0.5) | (y > hs - 0.5)
    assert outside.any() and np.all(out[outside] == 0)
    np.testing.assert_array_equal(sem_coverage(m, label_shape, sem_scale, (hs, ws)), ~outside)
    # memory stays bounded: many strips, none reading much more than the budget
    assert len(sem.reads) > 3 and max(sem.reads) < 3 * budget


def test_sem_to_working_grid_area_averages_fine_texture():
    """A checkerboard finer than the working grid averages to its mean (no aliasing)."""
    sem = (np.indices((800, 800)).sum(axis=0) % 2 * 200).astype(np.uint8)
    out = sem_to_working_grid(sem, _affine(8.0, 0.3, 3.5, 3.5), (96, 96), 1)
    inner = out[5:-5, 5:-5]
    assert abs(inner.mean() - 100) < 2 and inner.std() < 15


def test_identity_grid_is_exact_and_labels_upscale():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 70)).astype(np.uint8)
    np.testing.assert_array_equal(sem_to_working_grid(img, np.eye(3), img.shape, 1), img)
    labels = rng.integers(0, 5, (9, 7)).astype(np.uint8)
    up = labels_to_working_grid(labels, 3)
    assert up.shape == (27, 21) and np.array_equal(up[::3, ::3], labels) and np.array_equal(up[2::3, 2::3], labels)
    up = labels_to_working_grid(labels, 1.5)
    assert up.shape == (14, 10) and set(np.unique(up)) <= set(np.unique(labels))
    # centre-aligned: working pixel centre (u + 0.5) / s - 0.5 rounds to the label pixel
    for v in range(14):
        for u in range(10):
            lr, lc = min(8, int(np.floor((v + 0.5) / 1.5))), min(6, int(np.floor((u + 0.5) / 1.5)))
            assert up[v, u] == labels[lr, lc]
    with pytest.raises(ValueError, match="sem_scale"):
        labels_to_working_grid(labels, 0.5)
    with pytest.raises(ValueError, match="singular"):
        sem_to_working_grid(img, np.zeros((3, 3)) + np.diag([0, 0, 1]), img.shape, 1)
