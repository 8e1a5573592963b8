"""Unit tests of QA figures (prep/qa.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mineralseg.prep import qa


def test_qa_figures(tmp_path):
    from PIL import Image

    ids = np.zeros((40, 50), np.uint8)
    ids[10:30, 20:] = 2
    edges = qa.class_edges(ids)
    assert edges.sum() == 20 + 30 + 30 and edges[10:30, 19].all() and edges[9, 20:].all() and edges[29, 20:].all()
    sem = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    qa.plot_label_edges(sem, ids, tmp_path / "edges.png", title="t", crop=(0, 20, 0, 20))
    qa.plot_seams(np.zeros((40, 50, 3), np.uint8), [10, (20, 23)], [7], tmp_path / "seams.png")
    qa.plot_class_frequencies({"all": [0.5, 0.3, 0.2], "train": [0.4, 0.4, 0.2]}, ["a", "b", "c"],
                              [(255, 255, 255), (255, 0, 0), (0, 0, 255)], tmp_path / "freq.png")
    for name in ("edges.png", "seams.png", "freq.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edges.png", "freq.png", "seams.png"]  # no temp files


@pytest.mark.parametrize("shape", [(4822, 4822), (1205, 300), (2049, 17), (1000, 1000)])
def test_qa_shrinks_an_image_and_its_labels_to_one_shape(shape, tmp_path):
    """Regression: a 1,205-row grid (step 2) gave a 602-row image but 603 rows of label edges."""
    img = np.zeros(shape, np.uint8)
    grey, labels = qa.shrink_for_display(img), qa.shrink_for_display(img, nearest=True)
    assert grey.shape == labels.shape and max(grey.shape) <= qa.DISPLAY_MAX_SIDE
