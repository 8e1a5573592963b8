"""A trained model as one ONNX file, and prediction with ONNX Runtime.

:func:`export_onnx` writes a checkpoint's network as an ONNX graph whose batch size,
height and width are free (height and width multiples of the encoder stride, as for the
PyTorch model), with the checkpoint's self-description (class names and colours,
normalisation, input/tile size, ``sem_scale``, architecture) stored in the file's
metadata as JSON under the key ``mineralseg``. The file needs neither PyTorch nor this
package to run; within this package :func:`load_onnx` gives an :class:`OnnxPredictor`
that :mod:`mineralseg.infer.sliding` takes in place of the PyTorch model::

    predictor, meta = load_onnx("model.onnx")
    probs = predict_probabilities(predictor, image, mean=meta["mean"], std=meta["std"],
                                  multiple=meta["input_divisor"])

Not to be confused with ``mineralseg export-weights``, which downloads an encoder's
ImageNet weights for training offline.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mineralseg.errors import DataError, UserError

__all__ = ["META_PROP", "OnnxPredictor", "export_model", "export_onnx", "load_onnx", "read_onnx_meta"]

META_PROP = "mineralseg"  # metadata_props key of the JSON self-description
DEFAULT_OPSET = 18  # the lowest opset the torch.export-based exporter writes natively
_INPUT, _OUTPUT = "image", "logits"
def export_onnx(
    checkpoint_or_run: str | os.PathLike,
    path: str | os.PathLike,
    *,
    input_size: int | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the model of a checkpoint (or run folder) as an ONNX file.

    Parameters
    ----------
    checkpoint_or_run : path-like
        A ``.ckpt`` written by ``mineralseg train`` or a run folder (its best checkpoint).
    path : path-like
        The ONNX file to write (atomically: a failed export leaves nothing under this name).
    input_size : int, optional
        Side of the example input the graph is traced with (default: the training
        input size), rounded up to a valid size of at least two encoder strides. The graph accepts any
        (N, in_channels, H, W) float32 input with H and W multiples of the model's
        ``input_divisor`` (recorded in the metadata) and at least ``min_input_size``.
    opset : int
        ONNX operator set version (>= 18).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserError / DataError
        Missing or foreign checkpoint, bad ``input_size`` or ``opset``.
    """
    from mineralseg.evaluate.checkpoint import load_checkpoint_model

    if opset < DEFAULT_OPSET:
        raise UserError(f"opset {opset} is too old for the ONNX exporter; use {DEFAULT_OPSET} or newer")
    if input_size is not None and input_size < 1:
        raise UserError(f"input_size must be a positive number of pixels, got {input_size}")
    model, card = load_checkpoint_model(checkpoint_or_run)
    return export_model(model, path, card=card.to_dict(), input_size=input_size or card.input_size, opset=opset)


def export_model(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
    input_size: int | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write a model built by :func:`mineralseg.models.build_model` as an ONNX file.

    Parameters
    ----------
    model : SegmentationModel
        Has ``in_channels``, ``input_divisor`` and ``min_input_size``; exported in eval mode.
    path : path-like
        Written atomically.
    card : dict, optional
        JSON-serialisable self-description stored under :data:`META_PROP`, completed
        with ``input_divisor``, ``min_input_size`` and the input and output contract.
    input_size, opset
        See :func:`export_onnx`.

    Returns
    -------
    Path
        ``path``.
    """
    from mineralseg.io import atomic_path
    from mineralseg.models._checks import padded_size

    divisor, min_size = int(model.input_divisor), int(model.min_input_size)
    # Traced at >= 2 strides: a 1 x 1 deepest feature map would pin the graph to that size.
    side = padded_size(max(int(input_size or 0), 2 * divisor), divisor, min_size)
    card = {**(card or {}), "input_divisor": divisor, "min_input_size": min_size,
            "input": "(N, in_channels, H, W) float32 (uint8 / 255 - mean) / std", "output": "(N, C, H, W) logits"}  # fmt: skip
    example = torch.zeros(2, int(model.in_channels), side, side)
    batch = torch.export.Dim("batch", min=1)
    rows = torch.export.Dim("rows", min=max(1, min_size // divisor))
    cols = torch.export.Dim("cols", min=max(1, min_size // divisor))
    shapes = ({0: batch, 2: divisor * rows, 3: divisor * cols},)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="mineralseg-onnx-") as scratch, atomic_path(path) as tmp:
        raw = Path(scratch) / "model.onnx"
        with _quiet():
            torch.onnx.export(
                model.eval(), (example,), str(raw), input_names=[_INPUT], output_names=[_OUTPUT],
                dynamic_shapes=shapes, opset_version=opset, dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
        import onnx

        graph = onnx.load(str(raw))
        del graph.metadata_props[:]
        onnx.helper.set_model_props(graph, {META_PROP: json.dumps(card)})
        graph.producer_name = "mineralseg"
        onnx.save(graph, str(tmp))
    return path


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress lines and warnings (they are not for users)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def read_onnx_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The self-description that :func:`export_onnx` stored in an ONNX file.

    Raises
    ------
    UserError
        No file at ``path``.
    DataError
        Not an ONNX file, or one not written by ``mineralseg export``.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path} is not an ONNX model: {first}") from None
    props = {p.key: p.value for p in graph.metadata_props}
    if META_PROP not in props:
        raise DataError(f"{path} was not written by `mineralseg export`: it does not describe its classes and inputs")
    return json.loads(props[META_PROP])


class OnnxPredictor:
    """An ONNX model run by ONNX Runtime, called like the PyTorch model.

    Parameters
    ----------
    path : path-like
        ONNX file with one input (N, C, H, W) float32 and one output (N, K, H, W).
    threads : int, optional
        Threads ONNX Runtime uses within an operator (default: its own choice, all cores).
    providers : list of str, optional
        ONNX Runtime execution providers (default ``["CPUExecutionProvider"]``).

    Notes
    -----
    ``predictor(x)`` takes a (N, C, H, W) float32 torch tensor and returns the (N, K, H, W)
    float32 logits as a torch tensor on ``x``'s device: the contract of the ``model``
    argument of :func:`mineralseg.infer.predict_probability_bands`.
    """

    def __init__(
        self, path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise UserError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"ONNX Runtime cannot load {path}: {first}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(logits).to(x.device)


def load_onnx(
    path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None
) -> tuple[OnnxPredictor, dict[str, Any]]:
    """An ONNX file written by :func:`export_onnx`: its predictor and self-description.

    Parameters
    ----------
    path : path-like
    threads, providers
        See :class:`OnnxPredictor`.

    Returns
    -------
    predictor : OnnxPredictor
        Use as the ``model`` of :mod:`mineralseg.infer.sliding` with
        ``multiple=meta["input_divisor"]``.
    meta : dict
        The checkpoint's ``class_names``, ``class_colors``, ``mean``, ``std``,
        ``input_size``, ``tile_size``, ``sem_scale``, ``arch``, ``encoder``, ... plus
        ``input_divisor``, ``min_input_size`` and ``checkpoint`` (the source file), and
        ``onnx`` (this file).

    Raises
    ------
    UserError / DataError
        Missing file, not ONNX, or not written by ``mineralseg export``.
    """
    meta = read_onnx_meta(path)
    meta["onnx"] = str(path)
    return OnnxPredictor(path, threads=threads, providers=providers), meta
