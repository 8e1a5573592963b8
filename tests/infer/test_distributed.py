"""Prediction on a Dask cluster (mineralseg.infer.distributed) equals the local run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mineralseg.errors import UserError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.infer import predict_classes, window_starts
from mineralseg.infer.distributed import checkpoint_factory, connect, predict_classes_distributed, task_plan


@pytest.mark.parametrize("height, window, overlap, rows", [(300, 64, 24, 2), (300, 64, 0, 1), (50, 64, 8, 3),
                                                           (1000, 100, 70, 4), (257, 32, 31, 5), (96, 32, 8, 8)])
def test_each_task_places_its_windows_where_the_whole_image_run_does(height, window, overlap, rows):
    plan = task_plan(height, window, overlap, window_rows=rows)
    assert plan[0][0] == 0 and plan[-1][1] == height
    assert all(p[1] == q[0] for p, q in zip(plan, plan[1:]))  # owned rows: a partition, top to bottom
    everywhere = window_starts(height, window, window - overlap)
    for a, b, r0, r1 in plan:
        own = [r0 + s for s in window_starts(r1 - r0, window, window - overlap)]
        touching = [s for s in everywhere if s < b and s + window > a]
        assert own == (touching if height >= window else [0])
    if height >= 4 * window:  # more than one task; neighbours share only the rows of windows
        assert len(plan) > 1  # that reach across their border (at most one more near the irregular bottom)
        rows_of = [{r0 + s for s in window_starts(r1 - r0, window, window - overlap)} for _, _, r0, r1 in plan]
        shared = [len(p & q) for p, q in zip(rows_of, rows_of[1:])]
        across = -(-overlap // (window - overlap))
        assert shared[0] == across and max(shared) <= across + 1


class CountingFactory:
    """Builds the checkpoint's model and notes each build (pickled by value to the workers)."""

    def __init__(self, checkpoint: Path, log: Path) -> None:
        self.factory, self.log = checkpoint_factory(checkpoint, threads=1), log

    def __call__(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return self.factory()


def _image(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blobs = 90 * np.sin(yy / 7.0) * np.cos(xx / 11.0) + 110
    return np.clip(blobs + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_a_local_cluster_with_two_workers_gives_the_labels_of_the_local_run(trained_run, tmp_path):
    import cloudpickle
    import zarr

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    model, card = load_checkpoint_model(trained_run)
    image = _image((333, 150))
    # Windows of 64 overlapping by 24, 3 rows of windows a task: 3 tasks; batches of 3 of
    # the 4 windows of a row; the last row of windows is the irregular one.
    kwargs = dict(mean=card.mean, std=card.std, window=64, overlap=24, batch_size=3, multiple=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the workers
    try:
        want = predict_classes(model, image, **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert len(np.unique(want)) > 1
    log = tmp_path / "builds.txt"
    client, close = connect("local:2")
    try:
        got = predict_classes_distributed(CountingFactory(trained_run, log), image, scheduler=client, window_rows=3,
                                          **kwargs)  # fmt: skip
        np.testing.assert_array_equal(got, want)
        builds = log.read_text().split()
        assert len(task_plan(333, 64, 24, window_rows=3)) == 3
        assert len(builds) == len(set(builds)) == 2  # once per worker, not per task
        # A zarr image read by the workers themselves, into a zarr class map.
        src = zarr.create_array(tmp_path / "sem.zarr", shape=image.shape, chunks=(100, 100), dtype="u1")
        src[:] = image
        dst = zarr.create_array(tmp_path / "classes.zarr", shape=image.shape, chunks=(100, 100), dtype="u1")
        assert predict_classes_distributed(checkpoint_factory(trained_run, threads=1), src, scheduler=client,
                                           out=dst, window_rows=1, **kwargs) is dst  # fmt: skip
        np.testing.assert_array_equal(dst[:], want)
    finally:
        close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_bad_schedulers_give_one_clear_line():
    with pytest.raises(UserError, match=r"unknown scheduler 'gpu-farm'; use local:N .* or tcp://HOST:PORT"):
        connect("gpu-farm")
    with pytest.raises(UserError, match="give the number of local workers, e.g. local:2"):
        connect("local:two")
    with pytest.raises(UserError, match=r"no Dask scheduler answers at tcp://127.0.0.1:9.*dask scheduler"):
        connect("tcp://127.0.0.1:9", timeout=1)
    with pytest.raises(UserError, match="unknown engine 'tensorrt'"):
        checkpoint_factory("x.ckpt", engine="tensorrt")
