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

``--end-to-end`` adds the row of the whole user path instead: a raw uint8 SEM of
``--e2e-size`` squared (30,000 by default: 900 megapixels) through
``mineralseg.infer.predict.predict_image`` (lazy read, preview, strip-wise resampling to
a working grid ``--e2e-scale`` times coarser, normalisation, banded prediction, tiled TIFFs,
mineralogy, report) with a real U-Net resnet18 (random weights: the memory and time do
not depend on them), all cores. It also gives the time the study's 88,421 x 89,133 mosaic
would take on this machine (time per input pixel, scaled). The rows are appended, dated,
to ``end_to_end`` in the same JSON (the blending rows are kept).

Usage::

    python benchmarks/infer_memory.py                 # 12,000 x 12,000
    python benchmarks/infer_memory.py --size 4000     # quick run
    python benchmarks/infer_memory.py --end-to-end    # 30,000 x 30,000 raw SEM through predict
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
from prep_memory import SINGLE_THREAD_ENV, _rss_mb, write_synthetic_sem  # noqa: E402  (same peak-RSS measure)

METHODS = ("whole", "banded", "banded-out")
TITLES = {
    "whole": "predict_probabilities + argmax (whole (C, H, W) sum)",
    "banded": "predict_classes (band by band, class map in memory)",
    "banded-out": "predict_class_bands -> TiffBlockWriter (class map straight to a tiled TIFF)",
}
WRITE_ROWS = 1000
#: The study's biggest SEM mosaic (a raw uint8 file), for the time estimate.
STUDY_MOSAIC = (88_421, 89_133)


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


def e2e_child(raw: Path, size: int, scale: float, out: Path) -> dict:
    """``predict_image`` on a raw SEM with a random-init U-Net resnet18 (all threads)."""
    import torch

    from mineralseg.infer.predict import PredictSettings, predict_image
    from mineralseg.model_card import ModelCard
    from mineralseg.models import build_model

    torch.manual_seed(0)
    names = ("pores_background", "quartz", "albite", "clay_accessories")
    card = ModelCard(class_names=names, class_colors=((255, 255, 255), (255, 192, 192), (0, 255, 255), (0, 160, 0)),
                     ignore_index=255, arch="unet", encoder="resnet18", mean=0.5, std=0.25, input_size=256,
                     tile_size=256, out_size=256, sem_scale=1,
                     sem_normalisation={"method": "percentile", "low": 0.5, "high": 99.5, "drift": True},
                     sem_px_per_working_px=scale)  # fmt: skip
    model = build_model("unet", "resnet18", num_classes=len(names), in_channels=1, encoder_weights=None).eval()
    settings = PredictSettings(raw_shape=(size, size), raw_dtype="uint8", batch_size=8)
    baseline = _rss_mb()
    result = predict_image(model, card, raw, out, settings, progress=False)
    return {"time_s": round(result.seconds, 1), "peak_rss_mb": round(_rss_mb(), 1),
            "baseline_rss_mb": round(baseline, 1), "threads": torch.get_num_threads(),
            "working_shape": list(result.working_shape), "image_mpx_per_s": round(result.mpx_per_s, 3)}


def end_to_end(args) -> dict:
    """Write the raw SEM, run :func:`e2e_child` in its own process, return the dated row."""
    workdir = Path(tempfile.mkdtemp(prefix="infer_e2e-", dir=args.tmp))
    try:
        raw = workdir / "sem.raw"
        write_synthetic_sem(raw, args.e2e_size)
        cmd = [sys.executable, __file__, "--e2e-child", "--image", str(raw), "--child-out", str(workdir / "out"),
               "--e2e-size", str(args.e2e_size), "--e2e-scale", str(args.e2e_scale)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"end-to-end run failed:\n{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pixels = args.e2e_size**2
    study = STUDY_MOSAIC[0] * STUDY_MOSAIC[1]
    row.update({
        "method": "mineralseg predict (U-Net resnet18, random weights)",
        "image_shape": [args.e2e_size, args.e2e_size],
        "image_px_per_working_px": args.e2e_scale,
        "study_mosaic_shape": list(STUDY_MOSAIC),
        "study_mosaic_estimate_h": round(row["time_s"] * study / pixels / 3600, 2),
        "date": common.today(),
        "machine": common.machine_info(),
        "note": args.note,
    })
    return row


def e2e_markdown(rows: list[dict]) -> str:
    lines = [
        "",
        "## End to end: a raw SEM through `mineralseg predict`",
        "",
        "Lazy read, preview statistics, strip-wise resampling to the working grid, normalisation, banded "
        "prediction with a U-Net resnet18 (random weights), labels/uncertainty TIFFs, mineralogy and report; "
        "all cores. The study-mosaic time scales the measured time per input pixel to 88,421 x 89,133.",
        "",
        "| date | image | working grid | peak RSS (MB) | of which interpreter + libraries (MB) | time (s) | "
        "image Mpx/s | study mosaic, estimated (h) | machine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = [f"- {r['date']}: {r['note']}" for r in rows if r.get("note")]
    for r in rows:
        lines.append(
            f"| {r['date']} | {r['image_shape'][0]:,} x {r['image_shape'][1]:,} | "
            f"{r['working_shape'][0]:,} x {r['working_shape'][1]:,} (1/{r['image_px_per_working_px']:g}) | "
            f"{r['peak_rss_mb']:,.0f} | {r['baseline_rss_mb']:,.0f} | {r['time_s']:,.0f} | {r['image_mpx_per_s']:.2f} | "
            f"{r['study_mosaic_estimate_h']:.1f} | {common.machine_line(r['machine'])}, {r['threads']} threads |"
        )
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


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
    parser.add_argument("--end-to-end", action="store_true", help="run the end-to-end predict row instead")
    parser.add_argument("--e2e-size", type=int, default=30_000, help="side of the raw SEM (default 30000)")
    parser.add_argument("--e2e-scale", type=float, default=4.0, help="image px per working px (default 4)")
    parser.add_argument("--e2e-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--note", default=None, help="a remark stored with the end-to-end row (e.g. machine load)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.image, args.child_out, args)))
        return 0
    if args.e2e_child:
        print(json.dumps(e2e_child(args.image, args.e2e_size, args.e2e_scale, args.child_out)))
        return 0
    if args.end_to_end:
        from mineralseg.io import atomic_path, write_json

        row = end_to_end(args)
        print(f"end to end: peak RSS {row['peak_rss_mb']:,.0f} MB, {row['time_s']:,.0f} s, "
              f"{row['image_mpx_per_s']:.2f} image Mpx/s; study mosaic about {row['study_mosaic_estimate_h']:.1f} h")
        path = args.results / "infer_memory.json"
        report = json.loads(path.read_text()) if path.is_file() else {"benchmark": "infer_memory"}
        report.setdefault("end_to_end", []).append(row)
        write_json(path, report)
        if "results" in report:
            with atomic_path(args.results / "infer_memory.md") as tmp:
                tmp.write_text(markdown(report) + e2e_markdown(report["end_to_end"]))
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
    previous = json.loads((args.results / "infer_memory.json").read_text()) if (
        args.results / "infer_memory.json").is_file() else {}
    if previous.get("end_to_end"):  # keep the end-to-end rows
        report["end_to_end"] = previous["end_to_end"]
    write_json(args.results / "infer_memory.json", report)
    if len(results) == len(METHODS):
        with atomic_path(args.results / "infer_memory.md") as tmp:
            tmp.write_text(markdown(report) + e2e_markdown(report.get("end_to_end", [])))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
