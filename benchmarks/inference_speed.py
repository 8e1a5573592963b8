"""Inference speed and peak memory: the project's banded prediction against its ceiling,
MONAI's sliding-window inference and the study's non-overlapping tiles.

One run, one model (a U-Net with a resnet18 encoder, random init, ``--classes`` outputs)
and one synthetic uint8 image per size (``--sizes``, 2048 / 4096 / 8192 px sides by
default, written to a scratch ``.npy``). Every method runs in its own subprocess (peak
RSS is the child's own ``VmHWM``), with the same number of threads (``--threads``), the
same windows (``--window`` px overlapping by ``--overlap``) and batch size:

``raw``
    The model's forward pass alone on batches of windows already cut and normalised
    (no reading, resizing, blending, argmax or writing): the ceiling. Timed on the first
    ``--raw-windows`` windows of the grid (the time per window does not depend on the
    image) and scaled to all windows.
``banded``
    ``predict (banded)``: :func:`mineralseg.infer.predict_class_bands` on the image opened
    lazily (:func:`mineralseg.io.open_image`), class ids written band by band into an
    on-disk array, as ``mineralseg predict`` does.
``monai``
    MONAI's ``sliding_window_inference`` on the whole image as one tensor, same window,
    overlap (as a fraction) and batch size, Gaussian blending of the softmax
    probabilities, then argmax.
``tiles``
    Non-overlapping tiles of ``--window`` px, each predicted alone and its argmax written
    (the study's way; the last tile of a row or column is shifted to end at the border).

``mpx_per_s`` is image megapixels per second of the method's own timed part (model
building and the image file are outside it); ``computed_mpx_per_s`` counts the window
pixels the model computed (overlaps count twice). Targets (issue 12): banded >= monai in
speed; banded >= 0.85 of raw per pixel computed; banded's peak RSS flat in image size.
``agreement`` is the share of pixels whose class equals banded's (different blending
weights change a few pixels near window edges).

All four methods use the model in the channels-last memory layout, as
:func:`mineralseg.infer.predict_probability_bands` does on the CPU. ``--settings`` adds
rows for CPU settings of the raw forward pass at the smallest size (fp32 in the default
layout, channels-last, bf16 autocast, ``--threads`` + 1 threads, ONNX Runtime), each in its
own process, to see which ones make inference faster on this machine.

Usage::

    python benchmarks/inference_speed.py                       # 2k, 4k, 8k; ~20 min here
    python benchmarks/inference_speed.py --sizes 1024 --settings
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)
from infer_memory import write_image  # noqa: E402  (same synthetic image)
from prep_memory import _rss_mb  # noqa: E402  (same peak-RSS measure)

METHODS = ("raw", "banded", "monai", "tiles")
TITLES = {
    "raw": "(a) raw forward on the windows (ceiling)",
    "banded": "(b) predict (banded)",
    "monai": "(c) MONAI sliding_window_inference (Gaussian)",
    "tiles": "(d) non-overlapping tiles (study)",
}
SETTINGS = ("fp32", "channels-last", "bf16", "more-threads", "onnxruntime")
CHANNELS_LAST = (*METHODS, "channels-last")  # predict's CPU layout; the methods all use it
MEAN, STD = 0.5, 0.25


# --------------------------------------------------------------------------- child side
def build(args):
    import torch

    from mineralseg.models import build_model

    torch.manual_seed(0)
    options = {"decoder_channels": tuple(args.decoder_channels)} if args.decoder_channels else {}
    return build_model("unet", "resnet18", num_classes=args.classes, encoder_weights=None, **options).eval()


def _batches_of_windows(image, args, limit: int | None):
    """Normalised (N, 1, S, S) float32 batches of the grid's windows (row by row), and their count."""
    import torch

    from mineralseg.infer import window_starts

    h, w = image.shape
    step = args.window - args.overlap
    grid = [(r, c) for r in window_starts(h, args.window, step) for c in window_starts(w, args.window, step)]
    chosen = grid[:limit] if limit else grid
    batches = []
    for k in range(0, len(chosen), args.batch_size):
        crops = np.stack([np.asarray(image[r : r + args.window, c : c + args.window]) for r, c in chosen[k : k + args.batch_size]])
        batches.append(((torch.from_numpy(crops.astype(np.float32) / 255) - MEAN) / STD)[:, None])
    return batches, len(chosen), len(grid)


def run_child(method: str, image_path: Path, out: Path, args) -> dict:
    import contextlib

    import torch

    from mineralseg.infer import predict_class_bands, window_starts
    from mineralseg.io import open_image

    threads = args.threads + (1 if method == "more-threads" else 0)
    torch.set_num_threads(threads)
    image = open_image(image_path)
    h, w = image.shape
    step = args.window - args.overlap
    n_grid = len(window_starts(h, args.window, step)) * len(window_starts(w, args.window, step))
    model = build(args)
    autocast = contextlib.nullcontext
    if method in CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    if method == "bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    if method == "onnxruntime":
        model = _onnx_model(model, out.with_suffix(".onnx"), threads)
    warm = torch.zeros(args.batch_size, 1, args.window, args.window)
    with torch.inference_mode(), autocast():
        model(warm)  # one-off set-up of the convolution kernels, for every method alike
    baseline = _rss_mb()
    windows = n_grid
    extra = {}
    if method not in ("banded", "monai", "tiles"):  # the raw forward pass, in any setting
        batches, windows, n_grid = _batches_of_windows(image, args, args.raw_windows)
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast():
            for x in batches:
                model(x)
        seconds = (time.perf_counter() - t0) * n_grid / windows
        extra["windows_timed"] = windows
        windows = n_grid
    elif method == "banded":
        labels = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(h, w))
        t0 = time.perf_counter()
        for start, stop, classes in predict_class_bands(model, image, mean=MEAN, std=STD, window=args.window,
                                                        overlap=args.overlap, batch_size=args.batch_size):  # fmt: skip
            labels[start:stop] = classes
        labels.flush()
        seconds = time.perf_counter() - t0
    elif method == "monai":
        from monai.inferers import sliding_window_inference

        calls = []

        def predictor(x):
            calls.append(x.shape[0])
            return torch.softmax(model(x), 1)

        t0 = time.perf_counter()
        x = ((torch.from_numpy(np.asarray(image[:, :])).float() / 255 - MEAN) / STD)[None, None]
        with torch.inference_mode():
            probs = sliding_window_inference(x, (args.window, args.window), args.batch_size, predictor,
                                             overlap=args.overlap / args.window, mode="gaussian", progress=False)  # fmt: skip
            labels = probs[0].argmax(0).to(torch.uint8).numpy()
        np.save(out, labels)
        seconds = time.perf_counter() - t0
        windows = sum(calls)
    else:  # tiles
        labels = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(h, w))
        tiles = [(r, c) for r in window_starts(h, args.window, args.window) for c in window_starts(w, args.window, args.window)]
        t0 = time.perf_counter()
        with torch.inference_mode():
            for k in range(0, len(tiles), args.batch_size):
                chunk = tiles[k : k + args.batch_size]
                crops = np.stack([np.asarray(image[r : r + args.window, c : c + args.window]) for r, c in chunk])
                x = ((torch.from_numpy(crops).float() / 255 - MEAN) / STD)[:, None]
                ids = model(x).argmax(1).to(torch.uint8).numpy()
                for (r, c), t in zip(chunk, ids, strict=True):
                    labels[r : r + args.window, c : c + args.window] = t
        labels.flush()
        seconds = time.perf_counter() - t0
        windows = len(tiles)
    return {"time_s": round(seconds, 2), "windows": windows, "threads": threads, "peak_rss_mb": round(_rss_mb(), 1),
            "baseline_rss_mb": round(baseline, 1), **extra}  # fmt: skip


def _onnx_model(model, path: Path, threads: int):
    """The model through ONNX Runtime (exported here, outside the timed part)."""
    from mineralseg.infer.onnx import OnnxPredictor, export_model

    return OnnxPredictor(export_model(model, path), threads=threads)


# --------------------------------------------------------------------------- parent side
def spawn(method: str, image: Path, workdir: Path, args) -> dict:
    out = workdir / f"{method}-{args.current_size}.npy"
    cmd = [sys.executable, __file__, "--child", method, "--image", str(image), "--child-out", str(out),
           *_shared_args(args)]  # fmt: skip
    threads = str(args.threads + (1 if method == "more-threads" else 0))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-4000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["output"] = out if out.exists() else None
    return stats


def _shared_args(args) -> list[str]:
    out = ["--classes", str(args.classes), "--window", str(args.window), "--overlap", str(args.overlap),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--raw-windows", str(args.raw_windows)]  # fmt: skip
    if args.decoder_channels:
        out += ["--decoder-channels", *map(str, args.decoder_channels)]
    return out


def row(method: str, size: int, r: dict, args, agreement: float | None) -> dict:
    pixels = size * size
    return {
        "method": TITLES.get(method, method), "key": method, "image_shape": [size, size],
        "mpx_per_s": round(pixels / 1e6 / r["time_s"], 4),
        "computed_mpx_per_s": round(r["windows"] * args.window**2 / 1e6 / r["time_s"], 4),
        "peak_rss_mb": r["peak_rss_mb"], "baseline_rss_mb": r["baseline_rss_mb"], "time_s": r["time_s"],
        "windows": r["windows"], "threads": r["threads"], "agreement_with_banded": agreement,
        **({"windows_timed": r["windows_timed"]} if "windows_timed" in r else {}),
    }  # fmt: skip


def markdown(report: dict) -> str:
    p, m = report["params"], report["machine"]
    model = "U-Net, resnet18 encoder" + (f", decoder channels {p['decoder_channels']}" if p["decoder_channels"] else "")
    lines = [
        "# Inference speed and peak memory",
        "",
        f"{model}, random init, {p['classes']} classes; windows of {p['window']} px overlapping by {p['overlap']} px, "
        f"batches of {p['batch_size']}; {p['threads']} thread(s) per method; channels-last layout (what predict uses on "
        "the CPU); synthetic uint8 images. Each method in its "
        "own process (peak RSS = its `VmHWM`). `mpx/s`: image megapixels per second; `computed`: window pixels the "
        "model computed per second. (a) is timed on the first "
        f"{p['raw_windows']} windows and scaled to the grid. Produced by `benchmarks/inference_speed.py` in one run "
        f"({report['wall_minutes']:.1f} min) on {report['date']}; the 2 cores were shared with other jobs "
        "during the run, so absolute times are pessimistic, ratios within a size are the comparable numbers.",
        "",
        "| method | image | mpx/s | computed mpx/s | peak RSS (MB) | of which libraries (MB) | time (s) | windows | same class as (b) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        agree = "" if r["agreement_with_banded"] is None else f"{100 * r['agreement_with_banded']:.2f} %"
        lines.append(
            f"| {r['method']} | {r['image_shape'][0]} x {r['image_shape'][1]} | {r['mpx_per_s']:.3f} | "
            f"{r['computed_mpx_per_s']:.3f} | {r['peak_rss_mb']:,.0f} | {r['baseline_rss_mb']:,.0f} | {r['time_s']:.1f} | "
            f"{r['windows']} | {agree} |"
        )
    if report["targets"]:
        lines += ["", "| size | (b) / (c) speed | (b) / (a) per computed pixel | (b) peak RSS (MB) | (c) peak RSS (MB) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for t in report["targets"]:
            lines.append(f"| {t['size']} | {t['banded_over_monai']} | {t['banded_over_raw']} | "
                         f"{t['banded_rss_mb']} | {t['monai_rss_mb']} |")  # fmt: skip
    if report["settings"]:
        s0 = report["settings"][0]
        lines += ["", f"CPU settings of the raw forward pass, {s0['image_shape'][0]} px image:", "",
                  "| setting | threads | computed mpx/s | vs fp32 |", "|---|---|---|---|"]  # fmt: skip
        for r in report["settings"]:
            lines.append(f"| {r['method']} | {r['threads']} | {r['computed_mpx_per_s']:.3f} | "
                         f"{r['computed_mpx_per_s'] / s0['computed_mpx_per_s']:.2f} |")  # fmt: skip
    lines += ["", f"Machine: {common.machine_line(m)}; Python {m['python']}, torch {report['torch']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--settings", action="store_true", help="also time CPU settings of the raw forward pass")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw-windows", type=int, default=32, help="windows timed for (a) (0: all)")
    parser.add_argument("--decoder-channels", type=int, nargs=5, default=None,
                        help="U-Net decoder widths (default smp's 256 128 64 32 16)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for scratch files")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--child", choices=METHODS + SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.image, args.child_out, args)))
        return 0
    if min(args.sizes) < args.window or not 0 <= args.overlap < args.window:
        raise SystemExit("need sizes >= --window and 0 <= --overlap < --window")

    import torch

    from mineralseg.io import atomic_path, write_json

    started = time.perf_counter()
    rows, settings, targets = [], [], []
    workdir = Path(tempfile.mkdtemp(prefix="inference_speed-", dir=args.tmp))
    try:
        for size in sorted(args.sizes):
            args.current_size = size
            image = workdir / f"image-{size}.npy"
            write_image(image, size)
            results = {}
            for method in args.methods:
                results[method] = r = spawn(method, image, workdir, args)
                print(f"{size:>6} {TITLES[method]:<48} {size * size / 1e6 / r['time_s']:8.3f} mpx/s  "
                      f"peak RSS {r['peak_rss_mb']:7,.0f} MB  {r['time_s']:7.1f} s", flush=True)
            banded = np.load(results["banded"]["output"]) if "banded" in results else None
            for method, r in results.items():
                agreement = None
                if banded is not None and r["output"] is not None and method != "banded":
                    agreement = round(float((np.load(r["output"]) == banded).mean()), 5)
                rows.append(row(method, size, r, args, agreement))
            if {"raw", "banded", "monai"} <= set(results):
                by = {r["key"]: r for r in rows[-len(results):]}
                targets.append({
                    "size": size,
                    "banded_over_monai": round(by["banded"]["mpx_per_s"] / by["monai"]["mpx_per_s"], 3),
                    "banded_over_raw": round(by["banded"]["computed_mpx_per_s"] / by["raw"]["computed_mpx_per_s"], 3),
                    "banded_rss_mb": by["banded"]["peak_rss_mb"], "monai_rss_mb": by["monai"]["peak_rss_mb"],
                })  # fmt: skip
            for r in results.values():
                if r["output"] is not None:
                    r["output"].unlink()
            if args.settings and size == min(args.sizes):
                for setting in SETTINGS:
                    r = spawn(setting, image, workdir, args)
                    settings.append(row(setting, size, r, args, None))
                    print(f"{size:>6} raw forward, {setting:<35} {settings[-1]['computed_mpx_per_s']:8.3f} computed mpx/s "
                          f"({r['threads']} threads)", flush=True)  # fmt: skip
            image.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "inference_speed",
        "params": {"classes": args.classes, "window": args.window, "overlap": args.overlap, "batch_size": args.batch_size,
                   "threads": args.threads, "raw_windows": args.raw_windows, "decoder_channels": args.decoder_channels,
                   "sizes": sorted(args.sizes)},  # fmt: skip
        "rows": rows,
        "targets": targets,
        "settings": settings,
        "wall_minutes": round((time.perf_counter() - started) / 60, 1),
        "machine": common.machine_info(),
        "torch": torch.__version__,
        "date": common.today(),
    }
    for t in targets:
        print(f"{t['size']:>6}: (b)/(c) speed {t['banded_over_monai']}, (b)/(a) per computed pixel {t['banded_over_raw']}")
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "inference_speed.json", report)
    with atomic_path(args.results / "inference_speed.md") as tmp:
        tmp.write_text(markdown(report))
    print(f"results: {args.results / 'inference_speed.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
