"""Peak memory and time of ``synthesize`` (map -> SEM) on a big label map: banded vs whole.

``mineralseg.infer.synthesize`` upsamples the class map window by window, one-hot encodes
one batch of windows at a time and blends the generator's output band by band into
``sem.tif`` / ``labels.tif``, so it never holds the one-hot of the map (``C x H x W``
float32) nor the generated image. This script writes a synthetic class map (``--size``
squared, 10,000 by default; ``--classes`` classes and a round section with 255 outside)
as a class-id TIFF and runs each method in its own subprocess (peak RSS is the child's
``VmHWM``), single-threaded:

``whole``
    the one-hot of the whole map (upsampled by ``--scale``) through the generator at
    once, then the grey levels: what the simple way needs.
``synthesize``
    ``synthesize_one`` on the map read by ``read_class_map`` (the user's path without
    the checkpoint): band by band into the tiled ``sem.tif`` and ``labels.tif``, the
    preview and the run record.

The generator is a stand-in (a 1 x 1 convolution and tanh): the memory of windows and
blending does not depend on it, a pix2pix U-Net would make the run hours long on a CPU,
and a pixel-wise generator makes both methods' images identical (checked). Windows of
``--tile`` px (the training tile side; input size the same). Output: the table on stdout
and ``benchmarks/results/synthesize_memory.json`` / ``.md``.

Usage::

    python benchmarks/synthesize_memory.py               # 10,000 x 10,000 map
    python benchmarks/synthesize_memory.py --size 3000   # quick run
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
import common  # benchmarks/common.py, beside this script
from prep_memory import SINGLE_THREAD_ENV, _rss_mb  # the same peak-RSS measure

METHODS = ("whole", "synthesize")
TITLES = {
    "whole": "one-hot of the whole map through the generator at once",
    "synthesize": "synthesize_one: band by band into sem.tif + labels.tif (+ preview, run.json)",
}
WRITE_ROWS = 1000


def write_map(path: Path, size: int, classes: int, seed: int = 0) -> None:
    """A (size, size) class-id TIFF: smooth blobs of ``classes`` ids, 255 outside a disk."""
    import tifffile

    rng = np.random.default_rng(seed)
    phase = rng.random(2) * 6.28
    x = np.arange(size, dtype=np.float32)
    centre, radius = (size - 1) / 2, 0.47 * size

    def strips():
        for r in range(0, size, WRITE_ROWS):
            rows = np.arange(r, min(size, r + WRITE_ROWS), dtype=np.float32)[:, None]
            field = np.sin(rows / 41.0 + phase[0]) * np.cos(x[None] / 67.0 + phase[1]) + 0.3 * np.sin(rows / 13.0)
            ids = np.clip(((field + 1.3) / 2.6 * classes).astype(np.int64), 0, classes - 1).astype(np.uint8)
            ids[(rows - centre) ** 2 + (x[None] - centre) ** 2 > radius**2] = 255
            yield ids

    tifffile.imwrite(path, np.concatenate(list(strips())), tile=(256, 256), compression="zlib", metadata=None)


def stand_in(classes: int):
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(classes, 1, 1)
    return torch.nn.Sequential(conv, torch.nn.Tanh()).eval()


def _card(classes: int, tile: int, scale: float):
    from mineralseg.model_card import ModelCard

    colours = tuple((40 * k % 256, 90 * k % 256, 150 * k % 256) for k in range(classes))
    return ModelCard(class_names=tuple(f"class{k}" for k in range(classes)), class_colors=colours, ignore_index=255,
                     arch="stand-in", mean=0.0, std=1.0, input_size=tile, tile_size=tile, out_size=tile,
                     sem_scale=scale, gan_mode="synthesize")  # fmt: skip


def run_child(method: str, map_path: Path, out: Path, args) -> dict:
    import torch

    from mineralseg.infer.synthesize import (
        SynthesizeSettings,
        grey_from_output,
        read_class_map,
        synthesize_one,
        working_shape,
    )
    from mineralseg.models.pix2pix import one_hot_labels

    torch.set_num_threads(1)
    card = _card(args.classes, args.tile, args.scale)
    generator = stand_in(args.classes)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    class_map = read_class_map(map_path, card)
    if method == "whole":
        s = int(args.scale)
        ids = np.kron(class_map.ids, np.ones((s, s), np.uint8)) if s > 1 else class_map.ids
        assert ids.shape == working_shape(class_map.ids.shape, args.scale)
        with torch.inference_mode():
            t = generator(one_hot_labels(torch.from_numpy(ids[None]), args.classes)).numpy()[0, 0]
        grey = grey_from_output(t)
        grey[ids == 255] = 0
        np.save(out, grey)
    else:
        synthesize_one(generator, card, class_map, map_path, out, SynthesizeSettings(batch_size=4, device="cpu"),
                       progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    return {"time_s": round(seconds, 2), "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1)}


def spawn(method: str, map_path: Path, workdir: Path, args) -> dict:
    out = workdir / (f"{method}.npy" if method == "whole" else method)
    cmd = [sys.executable, __file__, "--child", method, "--map", str(map_path), "--child-out", str(out),
           "--classes", str(args.classes), "--tile", str(args.tile), "--scale", str(args.scale)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SINGLE_THREAD_ENV}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["output"] = out / "sem.tif" if method == "synthesize" else out
    return stats


def markdown(report: dict) -> str:
    p, m = report["params"], report["machine"]
    lines = [
        "# Map -> SEM (`synthesize`): peak memory and time",
        "",
        f"Synthetic class map of {p['size']:,} x {p['size']:,} ({p['classes']} classes, a round section, 255 outside) "
        f"as a class-id TIFF, upsampled by {p['scale']:g} to a working grid of {p['working']:,} x {p['working']:,} "
        f"({p['megapixels']:,.0f} megapixels); windows of {p['tile']} px (the training tile side) overlapping by "
        f"{p['tile'] // 4} px; a 1 x 1 convolution and tanh stand in for the generator (the memory of windows and "
        "blending does not depend on it). Each method in its own process, single-threaded. Produced by "
        "`benchmarks/synthesize_memory.py`.",
        "",
        "| method | peak RSS (MB) | of which interpreter + libraries (MB) | time (s) |",
        "|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        lines.append(f"| {TITLES[name]} | {r['peak_rss_mb']:,.0f} | {r['baseline_rss_mb']:,.0f} | {r['time_s']:.1f} |")
    lines += [
        "",
        f"Generated images identical across methods: {'yes' if report['identical'] else 'NO'}. The one-hot of the "
        f"whole map alone is {p['one_hot_mb']:,.0f} MB (float32); the class map {p['map_mb']:,.0f} MB, the generated "
        f"image {p['image_mb']:,.0f} MB.",
        "",
        f"Machine: {common.machine_line(m)}; Python {m['python']}, numpy {np.__version__}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="side of the square class map (default 10000)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--tile", type=int, default=256, help="window side = training tile side (default 256)")
    parser.add_argument("--scale", type=float, default=1.0, help="working px per map px (an integer; default 1)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for scratch files")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--map", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.map, args.child_out, args)))
        return 0
    if args.scale != int(args.scale) or args.scale < 1:
        raise SystemExit("--scale must be a whole number >= 1 (the whole method upsamples with np.kron)")

    from mineralseg.io import atomic_path, read_image, write_json

    workdir = Path(tempfile.mkdtemp(prefix="synthesize_memory-", dir=args.tmp))
    try:
        map_path = workdir / "map.tif"
        write_map(map_path, args.size, args.classes)
        results = {}
        for method in args.methods:
            results[method] = r = spawn(method, map_path, workdir, args)
            print(f"{method:>10}: peak RSS {r['peak_rss_mb']:8,.0f} MB  time {r['time_s']:7.1f} s", flush=True)
        images = [np.load(o) if o.suffix == ".npy" else read_image(o) for o in (r.pop("output") for r in results.values())]
        identical = all(np.array_equal(images[0], m) for m in images[1:])
        del images
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    working = round(args.size * args.scale)
    report = {
        "benchmark": "synthesize_memory",
        "params": {"size": args.size, "scale": args.scale, "working": working,
                   "megapixels": round(working**2 / 1e6, 1), "classes": args.classes, "tile": args.tile,
                   "threads": 1, "one_hot_mb": round(args.classes * working**2 * 4 / 1e6, 1),
                   "map_mb": round(args.size**2 / 1e6, 1), "image_mb": round(working**2 / 1e6, 1)},
        "results": results,
        "identical": identical,
        "machine": common.machine_info(),
        "date": common.today(),
    }
    print(f"generated images identical: {identical}")
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "synthesize_memory.json", report)
    if len(results) == len(METHODS):
        with atomic_path(args.results / "synthesize_memory.md") as tmp:
            tmp.write_text(markdown(report))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
