"""Write a synthetic dataset folder: SEM/QEMSCAN pairs, truth, and a ready prepare.yaml.

Layout (docs/CONTRACTS.md, "Synthetic data layout")::

    OUT/synth.json                       generator parameters and version
    OUT/prepare.yaml                     config for `mineralseg prepare`
    OUT/<sample>/sem.tif                 uint8 backscatter image (tiled TIFF)
    OUT/<sample>/qemscan.png             RGB QEMSCAN map with mosaic damage
    OUT/<sample>/truth/qemscan_clean.png the clean RGB map on the label grid
    OUT/<sample>/truth/truth.json        label_to_sem, ratio, seams, fractions, ...

The folder is built under a temporary name and renamed at the end, so a failure never
leaves a half-written OUT behind.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mineralseg.errors import UserError
from mineralseg.io.atomic import atomic_dir, atomic_path, write_json
from mineralseg.io.writers import write_png, write_tiff
from mineralseg.synth.sample import SYNTH_VERSION, SynthSample, generate_sample

# Tiles per label-grid side on the working grid at sem_scale 1: the section (~76 % of
# the label grid) then gives a few dozen tiles per sample.
TILES_PER_LABEL_SIDE = 8
# Tile sides are multiples of this and at least MIN_TILE (a CNN needs some context).
TILE_MULTIPLE = 4
MIN_TILE = 8
# TIFF tile of sem.tif.
SEM_TIFF_TILE = (256, 256)


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of a dataset made with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def sample_name(index: int) -> str:
    """Folder name of sample ``index``: sample00, sample01, ..."""
    return f"sample{index:02d}"


def _defaults_for(index: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Per-sample options: every other sample carries the +16 offset (as 4 of the study's
    9 images did) and every third one is a rectangular block, unless given."""
    out = dict(opts)
    out.setdefault("offset16", index % 2 == 1)
    out.setdefault("shape", "rect" if index % 3 == 2 else "round")
    return out


# Options of generate_sample that write_synth_dataset passes through (**opts).
SAMPLE_OPTIONS = tuple(
    p for p in inspect.signature(generate_sample).parameters if p not in ("seed", "size", "progress")
)


def _check_opts(opts: dict[str, Any]) -> None:
    bad = sorted(set(opts) - set(SAMPLE_OPTIONS))
    if bad:
        raise UserError(f"unknown synth option(s) {', '.join(bad)}; valid: {', '.join(SAMPLE_OPTIONS)}")


def tile_size_for(label_sides: list[int]) -> int:
    """Tile side (working grid, sem_scale 1) for label grids of the given sides."""
    side = float(np.median(label_sides)) / TILES_PER_LABEL_SIDE
    return max(MIN_TILE, int(round(side / TILE_MULTIPLE)) * TILE_MULTIPLE)


def prepare_yaml(names: list[str], palette: str, tile_size: int, seed: int) -> str:
    """Text of ``prepare.yaml`` for the written samples (docs/CONTRACTS.md format)."""
    lines = [
        "# Config for `mineralseg prepare` written by `mineralseg synth`.",
        "# Paths are relative to this file's folder.",
        f"palette: {palette}",
        "classes: groups             # groups | minerals",
        "label_coding: color",
        "unknown_colors: reject",
        "color_tolerance: 0",
        "sem_scale: 1                # SEM pixels per label pixel on the working grid",
        f"tile_size: {tile_size}               # working-grid pixels (a few dozen tiles per sample)",
        "out_size: 64",
        "min_sample_fraction: 0.5",
        "normalise: {method: percentile, low: 0.5, high: 99.5, drift: true}",
        "repair_seams: auto",
        "register: true",
        f"seed: {int(seed)}",
        "split:",
        "  by: blocks",
        "  fractions: {train: 0.7, val: 0.15, test: 0.15}",
        "  block_tiles: 2",
        "samples:",
    ]
    for name in names:
        lines += [f"  - name: {name}", f"    sem: {name}/sem.tif", f"    labels: {name}/qemscan.png"]
    return "\n".join(lines) + "\n"


def write_sample(folder: Path, sample: SynthSample) -> None:
    """Write one sample's files into ``folder`` (created)."""
    (folder / "truth").mkdir(parents=True, exist_ok=True)
    write_tiff(folder / "sem.tif", sample.sem, tile=SEM_TIFF_TILE)
    write_png(folder / "qemscan.png", sample.schema.ids_to_colors(sample.labels))
    write_png(folder / "truth" / "qemscan_clean.png", sample.schema.ids_to_colors(sample.labels_clean))
    write_json(folder / "truth" / "truth.json", sample.truth_dict())


def write_synth_dataset(
    out: str | Path,
    *,
    samples: int = 2,
    size: int = 2048,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **opts: Any,
) -> Path:
    """Generate ``samples`` synthetic SEM/QEMSCAN pairs into the folder ``out``.

    Parameters
    ----------
    out : path-like
        Output folder (must not exist unless ``overwrite``).
    samples : int
        Number of samples (>= 1).
    size : int
        SEM side in pixels (>= 256).
    seed : int
        Dataset seed; sample ``k`` uses :func:`sample_seed` ``(seed, k)``.
    overwrite : bool
        Replace an existing ``out`` (only once the new folder is complete).
    progress : bool
        Progress bars on stderr.
    **opts
        Options of :func:`generate_sample` (ratio, rotation_deg, shift_frac, scale,
        offset16, shape, palette, damage) applied to every sample. Without ``offset16``
        every other sample gets the +16 offset; without ``shape`` every third is "rect".

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    UserError
        ``out`` exists without ``overwrite``; bad sample count, size or option.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists (use --overwrite to replace it)")
    if int(samples) != samples or samples < 1:
        raise UserError(f"number of samples must be a positive integer, got {samples}")
    _check_opts(opts)
    names = [sample_name(k) for k in range(int(samples))]
    records = []
    palette = None
    with atomic_dir(out, overwrite=overwrite) as tmp:
        bar = tqdm(names, desc="synth", unit="sample", disable=None if progress else True, file=sys.stderr)
        for k, name in enumerate(bar):
            kseed = sample_seed(seed, k)
            s = generate_sample(kseed, size=size, progress=progress, **_defaults_for(k, opts))
            write_sample(tmp / name, s)
            palette = s.palette
            records.append({
                "name": name, "seed": kseed, "ratio": s.ratio, "shape": s.shape,
                "grey_offset": s.grey_offset, "label_shape": list(s.labels_clean.shape),
            })
            del s
        tile = tile_size_for([r["label_shape"][0] for r in records])
        with atomic_path(tmp / "prepare.yaml") as path:
            path.write_text(prepare_yaml(names, _palette_ref(opts.get("palette"), palette), tile, seed))
        write_json(tmp / "synth.json", {
            "generator": "mineralseg.synth",
            "version": SYNTH_VERSION,
            "seed": int(seed),
            "samples": int(samples),
            "size": int(size),
            "options": {k: _plain(v) for k, v in opts.items()},
            "palette": palette,
            "sample_seed": "numpy SeedSequence([seed, index]).generate_state(1, uint32)[0]",
            "sample_records": records,
        })
    return out


def _palette_ref(given: Any, name: str | None) -> str:
    """How prepare.yaml names the palette: a given YAML file by absolute path, else its name."""
    if isinstance(given, (str, Path)) and Path(given).suffix.lower() in (".yaml", ".yml"):
        return str(Path(given).resolve())
    return str(name)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
