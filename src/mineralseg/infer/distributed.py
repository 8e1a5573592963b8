"""Whole-image prediction on a Dask distributed cluster, identical to the local run.

The image is cut into bands of rows; each task predicts one band on a worker with
:func:`mineralseg.infer.predict_class_bands` and sends back its class ids. A band's
pixels must be blended from exactly the windows (same positions, same weights, same
summation order, same batches) as in the single-machine run, so the cut follows the
window grid instead of a fixed halo:

* the local run places windows at the row offsets ``window_starts(H, window, step)``
  (``step = window - overlap``) and, on every row of windows, at the same column offsets;
* a task that owns image rows ``a .. b`` reads the rows ``r0 .. r1`` from the first
  to the last of those windows that touch ``a .. b`` (``r0`` a window start, ``r1`` its
  last window's end) over the full width, and predicts them as an image of its own;
* on rows ``r1 - r0`` the windows start at ``0, step, 2 step, ...`` and the last at
  ``r1 - r0 - window``: exactly the global windows shifted by ``r0``, including the
  image's last, irregular one (see :func:`task_plan`). Each owned pixel therefore sums
  the same windows, in the same order, in batches of the same windows (a batch never
  spans two rows of windows), as in the local run: the class ids are identical.

Neighbouring tasks both compute the row of windows that straddles their border (the
halo): with the default of 8 rows of windows per task that is one row in 8 extra. The
model is built once per worker by ``model_factory`` (a worker plugin), never pickled
per task. A zarr image is read by the workers themselves (it must be at a path or URL
they can reach); any other array is sliced on the client and its rows sent. The class
ids come back to the client, which writes them into ``out`` (for example an on-disk
zarr or memmap array), so nothing image-sized needs to be in memory anywhere.

See ``docs/distributed.md`` for starting a scheduler and GPU workers.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from mineralseg.errors import UserError
from mineralseg.infer.sliding import predict_class_bands, predict_probability_bands, window_starts

__all__ = ["checkpoint_factory", "connect", "predict_classes_distributed", "task_plan"]

DEFAULT_WINDOW_ROWS = 8  # rows of windows per task (one row in 8 computed twice)
_IN_FLIGHT_PER_WORKER = 2  # tasks queued per worker at a time (bounds client memory)


def task_plan(
    height: int, window: int, overlap: int, *, window_rows: int = DEFAULT_WINDOW_ROWS
) -> list[tuple[int, int, int, int]]:
    """How an image of ``height`` rows is cut into tasks.

    Parameters
    ----------
    height : int
        Image rows.
    window, overlap : int
        As in :func:`mineralseg.infer.predict_probability_bands`.
    window_rows : int
        Rows of windows each task owns (about ``window_rows * (window - overlap)`` image rows).

    Returns
    -------
    list of (a, b, r0, r1)
        The task owns image rows ``a .. b`` (the ``a .. b`` partition ``0 .. height``, top
        to bottom) and reads rows ``r0 .. r1`` (all windows touching ``a .. b``); predicting
        rows ``r0 .. r1`` alone places its windows exactly where the whole-image run does.
    """
    if window_rows < 1:
        raise ValueError(f"window_rows must be >= 1, got {window_rows}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    starts = window_starts(height, window, window - overlap)
    plan = []
    for k in range(0, len(starts), window_rows):
        # Own the rows from just below the previous task's windows' overlap: the row of
        # windows at the border is shared, no other.
        a = 0 if k == 0 else min(height, starts[k] + overlap)
        b = height if k + window_rows >= len(starts) else min(height, starts[k + window_rows] + overlap)
        if b <= a:
            continue
        first = next(i for i, s in enumerate(starts) if s + window > a)
        last = max(i for i, s in enumerate(starts) if s < b)
        plan.append((a, b, starts[first], min(height, starts[last] + window)))
    return plan


def connect(scheduler: Any, *, timeout: float = 10.0) -> tuple[Any, Callable[[], None]]:
    """A Dask client for ``scheduler`` and the function that closes what was opened.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"local:N"``: a new local cluster of N worker processes with one thread each;
        ``"tcp://HOST:PORT"`` (or ``tls://``, ``ucx://``): an existing scheduler; or a
        client (used as is, not closed).
    timeout : float
        Seconds to wait for the scheduler.

    Raises
    ------
    UserError
        A string of another form, or a scheduler that does not answer.
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler, lambda: None
    text = str(scheduler).strip()
    if text.startswith("local:"):
        n = text.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise UserError(f"scheduler {text!r}: give the number of local workers, e.g. local:2")
        cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    if "://" in text:
        try:
            client = Client(text, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(
                f"no Dask scheduler answers at {text} ({first}); start one with `dask scheduler` "
                "(see docs/distributed.md) or use local:N"
            ) from None
        return client, client.close
    raise UserError(f"unknown scheduler {text!r}; use local:N (N local workers) or tcp://HOST:PORT")


class _ModelPlugin(WorkerPlugin):
    """Worker plugin: builds the model once when the worker starts (or joins)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.model: Any = None

    def setup(self, worker: Any) -> None:
        self.model = self.factory()

    def teardown(self, worker: Any) -> None:
        self.model = None


def _predict_rows(
    plugin: str, image: Any, a: int, b: int, r0: int, r1: int, kwargs: dict[str, Any]
) -> tuple[int, int, np.ndarray]:
    """On a worker: class ids of image rows ``a .. b`` predicted from rows ``r0 .. r1`` of
    ``image`` (the whole image, or already just those rows)."""
    from distributed import get_worker

    model = get_worker().plugins[plugin].model
    rows = np.asarray(image if image.shape[0] == r1 - r0 else image[r0:r1])
    labels = np.zeros((b - a, rows.shape[1]), np.uint8)
    for start, stop, classes in predict_class_bands(model, rows, **kwargs):
        lo, hi = max(start + r0, a), min(stop + r0, b)
        if lo < hi:
            labels[lo - a : hi - a] = classes[lo - start - r0 : hi - start - r0]
        if stop + r0 >= b:
            break
    return a, b, labels


def _is_zarr(image: Any) -> bool:
    return type(image).__module__.split(".")[0] == "zarr"


def predict_classes_distributed(
    model_factory: Callable[[], Any],
    image: Any,
    *,
    scheduler: Any = "local:2",
    out: Any | None = None,
    window_rows: int = DEFAULT_WINDOW_ROWS,
    resources: dict[str, float] | None = None,
    progress: bool = False,
    **sliding_kwargs: Any,
) -> Any:
    """(H, W) uint8 class ids of a whole image, predicted on a Dask cluster.

    Parameters
    ----------
    model_factory : callable
        ``model_factory()`` returns the model (a callable as for
        :func:`mineralseg.infer.predict_probability_bands`); called once on each worker.
        Must pickle (a module-level function or ``functools.partial``; see
        :func:`checkpoint_factory`).
    image : (H, W) uint8 array
        A zarr array (each worker reads its rows; its store must be reachable from the
        workers) or any array that slices like numpy (sliced here, rows sent).
    scheduler : str or distributed.Client
        ``local:N`` or ``tcp://HOST:PORT``; see :func:`connect`.
    out : (H, W) uint8 array, optional
        Where the class ids go (e.g. an on-disk zarr array); a new numpy array by default.
    window_rows : int
        Rows of windows per task (see :func:`task_plan`).
    resources : dict, optional
        Worker resources each task needs, e.g. ``{"GPU": 1}`` for workers started with
        ``--resources GPU=1``.
    progress : bool
        A progress bar over the tasks.
    **sliding_kwargs
        ``mean``, ``std``, ``window``, ``overlap``, ``zoom``, ``multiple``, ``batch_size``,
        ``device`` (on the workers), ``flips``: as for
        :func:`mineralseg.infer.predict_probability_bands`.

    Returns
    -------
    (H, W) uint8 array
        ``out``; equal to :func:`mineralseg.infer.predict_classes` of the same model,
        image and arguments run on one machine.

    Raises
    ------
    UserError
        Bad scheduler, or a scheduler that does not answer.
    """
    from distributed import as_completed
    from tqdm import tqdm

    if getattr(image, "ndim", None) != 2:
        raise ValueError(f"expected an (H, W) image, got shape {getattr(image, 'shape', None)}")
    if "needed" in sliding_kwargs:
        raise ValueError("needed= is not supported on a cluster; predict the whole image")
    shape = tuple(int(n) for n in image.shape)
    if out is None:
        out = np.zeros(shape, np.uint8)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the image {shape}")
    defaults = inspect.signature(predict_probability_bands).parameters
    window = int(sliding_kwargs.get("window", defaults["window"].default))
    overlap = int(sliding_kwargs.get("overlap", defaults["overlap"].default))
    plan = task_plan(shape[0], window, overlap, window_rows=window_rows)
    name = f"mineralseg-model-{uuid.uuid4().hex[:8]}"
    client, close = connect(scheduler)
    try:
        client.register_plugin(_ModelPlugin(model_factory), name=name)
        in_flight = _IN_FLIGHT_PER_WORKER * max(1, len(client.scheduler_info().get("workers", {})))
        by_worker = _is_zarr(image)
        todo = iter(plan)

        def submit(task: tuple[int, int, int, int]) -> Any:
            a, b, r0, r1 = task
            rows = image if by_worker else np.asarray(image[r0:r1])
            return client.submit(_predict_rows, name, rows, a, b, r0, r1, sliding_kwargs,
                                 resources=resources, pure=False)  # fmt: skip

        queue = as_completed([submit(t) for t in itertools.islice(todo, in_flight)])
        bar = tqdm(total=len(plan), desc="predict", unit="task", disable=not progress, leave=False)
        for future in queue:
            a, b, labels = future.result()
            out[a:b] = labels
            future.release()
            bar.update(1)
            nxt = next(todo, None)
            if nxt is not None:
                queue.add(submit(nxt))
        bar.close()
        client.unregister_worker_plugin(name)
    finally:
        close()
    return out


def _checkpoint_model(path: str, engine: str, device: str, threads: int | None) -> Any:
    if engine == "onnxruntime":
        from mineralseg.infer.onnx import load_onnx

        return load_onnx(path, threads=threads)[0]
    import torch

    from mineralseg.evaluate.checkpoint import load_checkpoint_model

    if threads is not None:
        torch.set_num_threads(threads)
    return load_checkpoint_model(path, map_location=device)[0]


def checkpoint_factory(
    path: str | os.PathLike, *, engine: str = "torch", device: str = "cpu", threads: int | None = None
) -> Callable[[], Any]:
    """A picklable ``model_factory`` for :func:`predict_classes_distributed`.

    Parameters
    ----------
    path : path-like
        A checkpoint or run folder (``engine="torch"``) or an ONNX file written by
        ``mineralseg export`` (``engine="onnxruntime"``), at a path the workers can read.
    engine : {"torch", "onnxruntime"}
    device : str
        Torch device on the workers (e.g. ``"cuda"``: each GPU worker sees its own GPU as
        ``cuda:0`` through ``CUDA_VISIBLE_DEVICES``).
    threads : int, optional
        Threads per worker for the model (default: the worker's setting, 1 under Dask).
    """
    if engine not in ("torch", "onnxruntime"):
        raise UserError(f"unknown engine {engine!r}; choose one of torch, onnxruntime")
    return functools.partial(_checkpoint_model, os.fspath(path), engine, device, threads)
