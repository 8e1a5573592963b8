"""Peak memory and time of downscaling a big SEM image: mineralseg vs the study's way.

The study loaded each SEM image whole (``np.fromfile``) and shrank it to the QEMSCAN
grid with ``cv2.resize(..., interpolation=cv2.INTER_AREA)``. mineralseg opens the file
lazily (:func:`mineralseg.io.open_image`) and averages it strip by strip
(:func:`mineralseg.io.downscale_area`). This script writes a synthetic raw uint8 SEM
(40,000 x 40,000 = 1.6 GB by default, written in strips, never held in memory) to a
temporary folder, runs each method in its own subprocess (so each peak RSS is its
own: the child's ``VmHWM``), checks that the outputs agree, prints a table and
writes ``benchmarks/results/prep_memory.json`` and ``.md``.

Methods:

``ours``
    ``downscale_area(open_image(raw, shape, dtype), 19)`` (positioned reads).
``study``
    ``cv2.resize(np.fromfile(raw).reshape(H, W)[:h*19, :w*19], (w, h), INTER_AREA)``;
    cropped to a multiple of the factor so that both methods compute the same pixels
    (the study resized the whole image to the QEMSCAN size, a factor of 19.0024 here).
``memmap``
    ``downscale_area(np.memmap(raw), 19)``: the same strips through a memory map,
    to show why :mod:`mineralseg.io` does not memory-map: mapped pages count in the
    resident set until unmapped.

All methods run single-threaded (OpenCV and BLAS limited to one thread) so the
benchmark does not take over a shared machine. The raw file is read right after
being written, so every method reads it from the page cache.

Usage::

    python benchmarks/prep_memory.py               # full size, ~1.6 GB in /tmp
    python benchmarks/prep_memory.py --size 8000   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The study's SEM / QEMSCAN pixel ratio (88,000 px SEM over 4,700 px QEMSCAN ~ 19).
STUDY_FACTOR = 19
# Rows per strip when writing the synthetic SEM: 40,000 x 500 = 20 MB at a time.
WRITE_ROWS = 500
# Peak RSS aimed at by mineralseg for this job.
TARGET_PEAK_MB = 1024
METHODS = ("ours", "study", "memmap")
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- synthetic SEM
def write_synthetic_sem(path: Path, size: int, *, seed: int = 0) -> None:
    """Write a ``size x size`` uint8 raw SEM-like texture strip by strip.

    Grains (a smooth two-frequency pattern), pores (dark where the pattern is low) and
    per-pixel noise, so that averaging has something to average.
    """
    from mineralseg.io import atomic_path

    rng = np.random.default_rng(seed)
    cols = np.arange(size, dtype=np.float32)
    wave_x1, wave_x2 = np.sin(cols / 37.0), np.cos(cols / 211.0)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for r0 in range(0, size, WRITE_ROWS):
            rows = np.arange(r0, min(r0 + WRITE_ROWS, size), dtype=np.float32)[:, None]
            grains = 140 + 45 * np.cos(rows / 53.0) * wave_x1 + 30 * np.sin(rows / 173.0) * wave_x2
            noise = rng.integers(-25, 26, grains.shape, dtype=np.int16)
            strip = grains + noise
            strip[grains < 110] *= 0.3  # pores
            np.clip(strip, 0, 255, out=strip)
            fh.write(strip.astype(np.uint8).tobytes())


# --------------------------------------------------------------------------- children
def _rss_mb() -> float:
    """Peak resident set of this process so far, in MB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's
    own address space. ``ru_maxrss`` is not used there: it survives ``execve``, so a
    child started by ``subprocess`` (vfork + exec) reports at least its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def run_child(method: str, raw: Path, size: int, factor: int, out: Path) -> dict:
    """Run one method in this process; return its timing and memory."""
    from mineralseg.io import downscale_area, open_image, output_shape

    if method == "study":  # only the study's method pays for loading OpenCV
        import cv2

        cv2.setNumThreads(1)

    h, w = output_shape((size, size), factor)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    if method == "ours":
        result = downscale_area(open_image(raw, shape=(size, size), dtype=np.uint8), factor)
    elif method == "memmap":
        result = downscale_area(np.memmap(raw, dtype=np.uint8, mode="r", shape=(size, size)), factor)
    elif method == "study":
        whole = np.fromfile(raw, dtype=np.uint8).reshape(size, size)
        result = cv2.resize(whole[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)
        del whole
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    np.save(out, result)
    return {"time_s": round(seconds, 3), "peak_rss_mb": round(_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1),
            "output_dtype": str(result.dtype), "output_shape": list(result.shape)}  # fmt: skip


def spawn(method: str, raw: Path, size: int, factor: int, workdir: Path) -> dict:
    out = workdir / f"{method}.npy"
    cmd = [sys.executable, __file__, "--child", method, "--raw", str(raw), "--size", str(size),
           "--factor", str(factor), "--child-out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SINGLE_THREAD_ENV}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    stats["process_wall_s"] = round(time.perf_counter() - t0, 3)
    stats["output"] = out
    return stats


# --------------------------------------------------------------------------- report
def machine() -> dict:
    """The machine (shared helper) plus the library versions this benchmark depends on."""
    import cv2

    return {**common.machine_info(), "numpy": np.__version__, "opencv": cv2.__version__}


def markdown(report: dict) -> str:
    p = report["params"]
    lines = [
        "# Downscaling a big SEM image: peak memory and time",
        "",
        f"Synthetic raw uint8 SEM of {p['size']:,} x {p['size']:,} ({p['file_mb']:,.0f} MB), area-averaged by "
        f"{p['factor']} to {p['out_shape'][0]:,} x {p['out_shape'][1]:,}; each method in its own process, "
        "single-threaded. Produced by `benchmarks/prep_memory.py`.",
        "",
        "| method | peak RSS (MB) | of which interpreter + libraries (MB) | time (s) |",
        "|---|---|---|---|",
    ]
    names = {"ours": "mineralseg: open_image + downscale_area (strips)",
             "study": "study: np.fromfile + cv2.resize INTER_AREA",
             "memmap": "np.memmap + downscale_area"}  # fmt: skip
    for m, r in report["results"].items():
        lines.append(f"| {names[m]} | {r['peak_rss_mb']:,.0f} | {r['baseline_rss_mb']:,.0f} | {r['time_s']:.1f} |")
    a = report["agreement"]
    m = report["machine"]
    lines += [
        "",
        f"Agreement (ours float32 vs study uint8): max |diff| = {a['max_abs_diff']:.3f} grey levels "
        f"(rounding of the uint8 output), mean {a['mean_abs_diff']:.3f}; "
        f"{100 * a['equal_after_rounding']:.2f} % of pixels equal after rounding.",
        f"Target peak RSS for ours: < {TARGET_PEAK_MB} MB: {'met' if report['target_met'] else 'NOT met'}.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} CPUs, {m['ram_gib']} GiB RAM; Python {m['python']}, "
        f"numpy {m['numpy']}, OpenCV {m['opencv']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=40_000, help="side of the square synthetic SEM (default 40000)")
    parser.add_argument("--factor", type=int, default=STUDY_FACTOR, help="downscale factor (default 19)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for the scratch raw file")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where prep_memory.json/.md go")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.raw, args.size, args.factor, args.child_out)))
        return 0

    from mineralseg.io import output_shape, write_json

    workdir = Path(tempfile.mkdtemp(prefix="prep_memory-", dir=args.tmp))
    try:
        raw = workdir / "sem.raw"
        t0 = time.perf_counter()
        write_synthetic_sem(raw, args.size)
        print(f"wrote {raw} ({raw.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        results = {}
        for method in args.methods:
            results[method] = spawn(method, raw, args.size, args.factor, workdir)
            r = results[method]
            print(f"{method:>7}: peak RSS {r['peak_rss_mb']:8,.0f} MB  time {r['time_s']:6.1f} s", flush=True)
        agreement = {}
        if "ours" in results and "study" in results:
            ours = np.load(results["ours"]["output"]).astype(np.float64)
            study = np.load(results["study"]["output"]).astype(np.float64)
            diff = np.abs(ours - study)
            agreement = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                         "equal_after_rounding": float((np.rint(ours) == study).mean())}  # fmt: skip
        for r in results.values():
            del r["output"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "benchmark": "prep_memory",
        "params": {"size": args.size, "factor": args.factor, "dtype": "uint8",
                   "file_mb": round(args.size**2 / 1e6, 1),
                   "out_shape": list(output_shape((args.size, args.size), args.factor)),
                   "threads": 1},  # fmt: skip
        "results": results,
        "agreement": agreement,
        "target_peak_mb": TARGET_PEAK_MB,
        "target_met": bool(results.get("ours", {}).get("peak_rss_mb", np.inf) < TARGET_PEAK_MB),
        "machine": machine(),
    }
    print()
    print(f"{'method':>8} | {'peak RSS MB':>11} | {'time s':>7}")
    for m, r in results.items():
        print(f"{m:>8} | {r['peak_rss_mb']:11,.0f} | {r['time_s']:7.1f}")
    if agreement:
        print(f"max |ours - study| = {agreement['max_abs_diff']:.3f}, mean {agreement['mean_abs_diff']:.4f}")
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "prep_memory.json", report)
    if agreement and len(results) == len(METHODS):
        from mineralseg.io import atomic_path

        with atomic_path(args.results / "prep_memory.md") as tmp:
            tmp.write_text(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
