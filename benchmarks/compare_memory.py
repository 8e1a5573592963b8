"""Peak memory and time of `mineralseg compare` as the predicted map grows.

``mineralseg.evaluate.compare.compare`` reads the predicted class map in strips (lazily
from a tiled TIFF), registers the QEMSCAN map onto it through images about the size of
the QEMSCAN map, and scores strip by strip; so its peak memory should stay flat as the
prediction grows, and its time grow linearly.

A synthetic section (``mineralseg.synth.generate_sample``, ``--size`` px, QEMSCAN grid
``--ratio`` times coarser, rotated and shifted) gives the truth map; the "prediction" is
that truth in the 5 groups, enlarged ``k`` times (nearest) for each ``k`` of
``--scales`` and written as a tiled TIFF strip by strip; the QEMSCAN map is the coarse
clean label map as a colour PNG (the same for every ``k``). Each ``compare`` runs in its
own single-threaded process (peak RSS is the child's own ``VmHWM``). Output: the table
on stdout and ``benchmarks/results/compare_memory.json`` / ``.md`` (rows with
``method``, ``image_shape``, ``mpx_per_s``, ``peak_rss_mb``, ...).

Usage::

    python benchmarks/compare_memory.py                     # 4,096 px section, k = 1, 2, 4
    python benchmarks/compare_memory.py --size 2048 --scales 1 2
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

PALETTE = "qemscan24-5groups"
WRITE_ROWS = 512


def write_inputs(folder: Path, size: int, ratio: float, scales: list[int], seed: int) -> dict:
    """The enlarged predictions (``pred_x{k}.tif``), the QEMSCAN PNG and the true placement."""
    from mineralseg.io import TiffBlockWriter, write_png
    from mineralseg.synth import generate_sample

    s = generate_sample(seed, size=size, ratio=ratio, palette=PALETTE, damage=False)
    truth = s.schema.to_groups(s.truth)
    write_png(folder / "qemscan.png", s.schema.ids_to_colors(s.labels_clean, level="minerals"))
    for k in scales:
        with TiffBlockWriter(folder / f"pred_x{k}.tif", (size * k, size * k), np.uint8) as writer:
            for r in range(0, size, WRITE_ROWS):
                writer.write(np.repeat(np.repeat(truth[r : r + WRITE_ROWS], k, 0), k, 1))
    return {"label_to_sem": s.label_to_sem.tolist(), "label_shape": list(s.labels_clean.shape)}


def run_child(pred: Path, qemscan: Path, out: Path) -> dict:
    from mineralseg.evaluate.compare import compare

    baseline = _rss_mb()
    t0 = time.perf_counter()
    result = compare(pred, qemscan, palette=PALETTE, out=out, progress=False)
    seconds = time.perf_counter() - t0
    reg = result.metrics["registration"]
    return {"time_s": round(seconds, 2), "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1),
            "miou": result.metrics["miou"], "label_to_prediction": reg["label_to_prediction"]}


def spawn(pred: Path, qemscan: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(pred), "--qemscan", str(qemscan), "--child-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SINGLE_THREAD_ENV}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"compare on {pred.name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    p, m = report["params"], report["machine"]
    lines = [
        "# `compare`: peak memory and time against the size of the predicted map",
        "",
        f"Synthetic section of {p['size']:,} px ({PALETTE}), QEMSCAN grid {p['ratio']} times coarser "
        f"({p['label_shape'][0]} x {p['label_shape'][1]}), rotated and shifted; the prediction is the truth enlarged "
        "k times (tiled TIFF, read lazily). Each run in its own process, single-threaded. Corner error: the found "
        "placement against the true one, in QEMSCAN pixels. Produced by `benchmarks/compare_memory.py`.",
        "",
        "| prediction (px) | megapixels | peak RSS (MB) | of which interpreter + libraries (MB) | time (s) "
        "| Mpx/s | mean IoU | corner error (px) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        h, w = r["image_shape"]
        lines.append(f"| {h:,} x {w:,} | {h * w / 1e6:,.0f} | {r['peak_rss_mb']:,.0f} | {r['baseline_rss_mb']:,.0f} "
                     f"| {r['time_s']:.1f} | {r['mpx_per_s']:.2f} | {r['miou']:.3f} | {r['corner_error_px']:.3f} |")
    lines += ["", f"Machine: {common.machine_line(m)}; Python {m['python']}, numpy {np.__version__}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the synthetic section's frame (px)")
    parser.add_argument("--ratio", type=float, default=16, help="prediction px per QEMSCAN px at k = 1")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4], help="enlargements k of the prediction")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for scratch files")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--qemscan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.qemscan, args.child_out)))
        return 0

    from mineralseg.io import atomic_path, write_json
    from mineralseg.prep.registration import corner_error

    workdir = Path(tempfile.mkdtemp(prefix="compare_memory-", dir=args.tmp))
    rows = []
    try:
        truth = write_inputs(workdir, args.size, args.ratio, args.scales, args.seed)
        m_true = np.asarray(truth["label_to_sem"])
        for k in args.scales:
            r = spawn(workdir / f"pred_x{k}.tif", workdir / "qemscan.png", workdir / f"out_x{k}")
            # the truth's placement on the enlarged grid: x_k = k x + (k - 1) / 2
            enlarge = np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2], [0.0, 0.0, 1.0]])
            side = args.size * k
            row = {"method": "compare", "image_shape": [side, side],
                   "mpx_per_s": round(side * side / 1e6 / r["time_s"], 3), "peak_rss_mb": r["peak_rss_mb"],
                   "baseline_rss_mb": r["baseline_rss_mb"], "time_s": r["time_s"], "miou": r["miou"],
                   "corner_error_px": round(corner_error(r["label_to_prediction"], enlarge @ m_true,
                                                         truth["label_shape"]), 4)}  # fmt: skip
            rows.append(row)
            print(f"{side:>6} px: peak RSS {row['peak_rss_mb']:8,.0f} MB  time {row['time_s']:7.1f} s  "
                  f"{row['mpx_per_s']:6.2f} Mpx/s  mIoU {row['miou']:.3f}  "
                  f"corner error {row['corner_error_px']:.3f} px",
                  flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "compare_memory",
        "params": {"size": args.size, "ratio": args.ratio, "scales": args.scales, "seed": args.seed,
                   "label_shape": truth["label_shape"], "palette": PALETTE, "threads": 1},
        "rows": rows,
        "machine": common.machine_info(),
        "date": common.today(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "compare_memory.json", report)
    with atomic_path(args.results / "compare_memory.md") as tmp:
        tmp.write_text(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
