"""Peak memory and time of whole-image prediction: banded class map vs whole probabilities.

``mineralseg.infer.predict_classes`` blends overlapping windows band by band: rows leave
the blended sum once no later window touches them, so it holds the class map (1 byte per
pixel, or nothing with ``out=`` an on-disk array) plus a band of ``C x (window + step) x
W`` float32. The simple way, used by ``evaluate --context sample`` before, keeps the
whole ``(C, H, W)`` float32 sum (plus the weight sum) and takes its argmax.

This script writes a synthetic uint8 image (``--size`` squared, 12,000 by default: 144
megapixels) to a scratch ``.npy`` file and runs each method in its own subprocess (peak
RSS is the child's own ``VmHWM``), single-threaded, on the image opened lazily with
``mineralseg.io.open_image`` (positioned reads, window by window):

``whole``
    ``predict_probabilities(...).argmax(0)`` (the (C, H, W) array in memory).
``banded``
    ``predict_classes(...)``: the class map in memory.
``banded-out``
    ``predict_class_bands`` into ``mineralseg.io.TiffBlockWriter``: the class map
    written to a tiled TIFF band by band (nothing image-sized in memory).

The network is a stand-in (one 3 x 3 convolution to ``--classes`` logits): the memory of
blending does not depend on it, and a real U-Net would make the run hours long on a CPU.
Windows of ``--window`` px overlapping by ``--overlap`` (the sample context of 128-px
tiles: 384 / 64). The three class maps must be equal. Output: the table on stdout and
``benchmarks/results/infer_memory.json`` / ``.md``.

Usage::

    python benchmarks/infer_memory.py                 # 12,000 x 12,000
    python benchmarks/infer_memory.py --size 4000     # quick run
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
from prep_memory import SINGLE_THREAD_ENV, _rss_mb  # noqa: E402  (same peak-RSS measure)

METHODS = ("whole", "banded", "banded-out")
TITLES = {
    "whole": "predict_probabilities + argmax (whole (C, H, W) sum)",
    "banded": "predict_classes (band by band, class map in memory)",
    "banded-out": "predict_class_bands -> TiffBlockWriter (class map straight to a tiled TIFF)",
}
WRITE_ROWS = 1000


def write_image(path: Path, size: int, seed: int = 0) -> None:
    """A (size, size) uint8 ``.npy`` of smooth blobs plus noise, written in strips."""
    rng = np.random.default_rng(seed)
    img = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(size, size))
    x = np.arange(size, dtype=np.float32)
    for r in range(0, size, WRITE_ROWS):
        rows = np.arange(r, min(size, r + WRITE_ROWS), dtype=np.float32)[:, None]
        blobs = 60 * np.sin(rows / 37.0) * np.cos(x[None] / 53.0) + 120
        img[r : r + len(rows)] = np.clip(blobs + rng.normal(0, 12, blobs.shape), 0, 255).astype(np.uint8)
    img.flush()
    del img


def stand_in_model(classes: int):
    import torch

    torch.manual_seed(0)
    return torch.nn.Conv2d(1, classes, 3, padding=1).eval()


def run_child(method: str, image_path: Path, out: Path, args) -> dict:
    import torch

    from mineralseg.infer import predict_class_bands, predict_classes, predict_probabilities
    from mineralseg.io import TiffBlockWriter, open_image

    torch.set_num_threads(1)
    image = open_image(image_path)
    model = stand_in_model(args.classes)
    kwargs = dict(mean=0.5, std=0.25, window=args.window, overlap=args.overlap, batch_size=4, multiple=1)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == "whole":
            classes = predict_probabilities(model, image, **kwargs).argmax(0).astype(np.uint8)
            np.save(out, classes)
        elif method == "banded":
            classes = predict_classes(model, image, **kwargs)
            np.save(out, classes)
        else:
            with TiffBlockWriter(out, image.shape, np.uint8) as writer:
                for _, _, classes in predict_class_bands(model, image, **kwargs):
                    writer.write(classes)
    seconds = time.perf_counter() - t0
    return {"time_s": round(seconds, 2), "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1)}


def spawn(method: str, image: Path, workdir: Path, args) -> dict:
    out = workdir / (f"{method}.tif" if method == "banded-out" else f"{method}.npy")
    cmd = [sys.executable, __file__, "--child", method, "--image", str(image), "--child-out", str(out),
           "--classes", str(args.classes), "--window", str(args.window), "--overlap", str(args.overlap)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SINGLE_THREAD_ENV}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["output"] = out
    return stats


def markdown(report: dict) -> str:
    p, m = report["params"], report["machine"]
    lines = [
        "# Whole-image prediction: peak memory and time",
        "",
        f"Synthetic uint8 image of {p['size']:,} x {p['size']:,} ({p['megapixels']:,.0f} megapixels), read lazily "
        f"(`open_image`, window by window); {p['classes']} classes; windows of {p['window']} px overlapping by {p['overlap']} px; a 3 x 3 "
        "convolution stands in for the network (the blending's memory does not depend on it). Each method in its "
        f"own process, single-threaded. Produced by `benchmarks/infer_memory.py`.",
        "",
        "| method | peak RSS (MB) | of which interpreter + libraries (MB) | time (s) |",
        "|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        lines.append(f"| {TITLES[name]} | {r['peak_rss_mb']:,.0f} | {r['baseline_rss_mb']:,.0f} | {r['time_s']:.1f} |")
    lines += [
        "",
        f"Class maps identical across methods: {'yes' if report['identical'] else 'NO'}. The whole (C, H, W) float32 "
        f"sum alone is {p['probabilities_mb']:,.0f} MB; the class map {p['class_map_mb']:,.0f} MB.",
        "",
        f"Machine: {common.machine_line(m)}; Python {m['python']}, numpy {np.__version__}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=12_000, help="side of the square image (default 12000)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--window", type=int, default=384)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for scratch files")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.image, args.child_out, args)))
        return 0
    if args.size < args.window or not 0 <= args.overlap < args.window:
        raise SystemExit("need --size >= --window and 0 <= --overlap < --window")

    from mineralseg.io import atomic_path, read_image, write_json

    workdir = Path(tempfile.mkdtemp(prefix="infer_memory-", dir=args.tmp))
    try:
        image = workdir / "image.npy"
        write_image(image, args.size)
        results = {}
        for method in args.methods:
            results[method] = r = spawn(method, image, workdir, args)
            print(f"{method:>10}: peak RSS {r['peak_rss_mb']:8,.0f} MB  time {r['time_s']:7.1f} s", flush=True)
        maps = [read_image(r.pop("output")) for r in results.values()]
        identical = all(np.array_equal(maps[0], m) for m in maps[1:])
        del maps
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pixels = args.size**2
    report = {
        "benchmark": "infer_memory",
        "params": {"size": args.size, "megapixels": round(pixels / 1e6, 1), "classes": args.classes,
                   "window": args.window, "overlap": args.overlap, "threads": 1,
                   "probabilities_mb": round(args.classes * pixels * 4 / 1e6, 1),
                   "class_map_mb": round(pixels / 1e6, 1)},  # fmt: skip
        "results": results,
        "identical": identical,
        "machine": common.machine_info(),
        "date": common.today(),
    }
    print(f"class maps identical: {identical}")
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "infer_memory.json", report)
    if len(results) == len(METHODS):
        with atomic_path(args.results / "infer_memory.md") as tmp:
            tmp.write_text(markdown(report))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
