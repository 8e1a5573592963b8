"""Shared fixtures: tiny prepared datasets in the ``mineralseg prepare`` layout.

Tests mirror the package tree (``tests/prep/test_mosaic.py`` tests
``mineralseg/prep/mosaic/``); the helpers here are shared by all of them.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep the 2 shared CPU cores for the test processes themselves.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

TINY_CLASSES = ("pore", "quartz", "clay")
TINY_COLORS = ((0, 0, 0), (255, 192, 192), (0, 128, 0))
# Grey levels of the tiny classes: pore dark; quartz and clay equally bright, clay
# told apart by a checkerboard texture (the model must use texture, not only grey).
_PORE_GREY, _BRIGHT_GREY, _TEXTURE_AMPLITUDE = 40, 170, 60


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in 0..1 (bilinear upsampling of a coarse grid)."""
    coarse = rng.random((cells + 1, cells + 1))
    x = np.linspace(0, cells, size)
    i = np.minimum(x.astype(int), cells - 1)
    f = x - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def tiny_tile(rng: np.random.Generator, size: int, *, with_clay: bool) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: uint8 SEM-like image and class ids 0..2."""
    mask = np.where(_smooth_field(rng, size, 4) < 0.45, 0, 1).astype(np.uint8)
    if with_clay:
        mask[(_smooth_field(rng, size, 3) > 0.6) & (mask == 1)] = 2
    yy, xx = np.mgrid[:size, :size]
    checker = np.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)
    grey = np.where(mask == 0, _PORE_GREY, _BRIGHT_GREY).astype(np.float64)
    grey += np.where(mask == 2, _TEXTURE_AMPLITUDE * checker, 0.0)
    grey += rng.normal(0, 4, grey.shape)
    return np.clip(grey, 0, 255).astype(np.uint8), mask


def write_tiny_dataset(
    root: Path,
    *,
    n_tiles: int = 24,
    size: int = 64,
    splits: tuple[int, int, int] = (16, 4, 4),
    seed: int = 0,
    clay_every: int = 4,
    ignore_rows: int = 0,
    class_names: tuple[str, ...] = TINY_CLASSES,
) -> Path:
    """Write a prepared dataset of ``n_tiles`` tiles to ``root`` and return it.

    Clay (class 2) is rare: only every ``clay_every``-th tile holds it. With
    ``ignore_rows`` > 0 the first rows of every mask are ignore_index (255).
    """
    assert sum(splits) == n_tiles
    rng = np.random.default_rng(seed)
    split_of = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    tiles = []
    for i in range(n_tiles):
        sample = f"s{i % 2}"
        image, mask = tiny_tile(rng, size, with_clay=i % clay_every == 0)
        if ignore_rows:
            mask[:ignore_rows] = 255
        tid = f"{sample}_t{i:03d}"
        img_rel, msk_rel = f"tiles/{sample}/{tid}_sem.png", f"tiles/{sample}/{tid}_mask.png"
        (root / "tiles" / sample).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / img_rel)
        Image.fromarray(mask).save(root / msk_rel)
        counts = np.bincount(mask[mask != 255].ravel(), minlength=len(class_names))[: len(class_names)]
        tiles.append({
            "id": tid, "sample": sample, "row": i // 2, "col": 0, "split": split_of[i],
            "image": img_rel, "mask": msk_rel, "class_counts": [int(c) for c in counts],
            "ignored": int((mask == 255).sum()),
        })
    manifest = {
        "version": 1,
        "schema": {"names": list(class_names), "colors": [list(c) for c in TINY_COLORS[: len(class_names)]],
                   "ignore_index": 255, "level": "groups", "palette": "tiny"},
        "tile_size": size,
        "out_size": size,
        "sem_scale": 1,
        "normalisation": {"method": "none"},
        "samples": ["s0", "s1"],
        "tiles": tiles,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 24-tile, 64 px, 3-class dataset (16 train / 4 val / 4 test); do not modify."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "dataset")


def tiny_train_config(dataset: Path, runs: Path, **changes) -> dict:
    """A training config that trains a small plain U-Net in seconds on the CPU."""
    cfg = {
        "dataset": str(dataset),
        "run": {"root": str(runs), "name": "tiny"},
        "seed": 0,
        "model": {"arch": "plain-unet", "encoder": None, "options": {"base_width": 8, "depth": 3}},
        "augment": {"enabled": False},
        "optim": {"lr": 3e-3},
        "trainer": {"max_epochs": 2, "batch_size": 4, "num_workers": 0, "accelerator": "cpu",
                    "devices": 1, "progress_bar": False, "log_every_n_steps": 1},
    }
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory) -> Path:
    """A finished 4-epoch training run on ``tiny_dataset``; do not modify."""
    from mineralseg.train import train

    runs = tmp_path_factory.mktemp("runs")
    return train(tiny_train_config(tiny_dataset, runs, **{"trainer.max_epochs": 4}))


# --------------------------------------------------------------------------- headless Chromium
# Reports are checked in a real browser: Debian's `chromium` package, installed by the
# `chromium` fixture when absent (as root with apt-get), else the tests that need it skip.
CHROMIUM_COMMANDS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_INSTALL_TIMEOUT_S = 300
_CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--hide-scrollbars", "--mute-audio",
)
# Injected into a COPY of a page (the page itself must not need JavaScript): a content
# security policy that lets only data: images and inline styles load (so any external
# request fails and shows up), and a script that writes, once the page has loaded, the
# state of every <img> and every policy violation into the DOM as JSON.
_PROBE_ID = "mineralseg-test-probe"
_PROBE = (
    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
    "<script>(function(){var v=[];"
    "document.addEventListener('securitypolicyviolation',function(e){v.push(e.violatedDirective+' '+e.blockedURI);});"
    "window.addEventListener('load',function(){var imgs=[].map.call(document.images,function(i){"
    "return {alt:i.alt,complete:i.complete,naturalWidth:i.naturalWidth,naturalHeight:i.naturalHeight};});"
    f"var p=document.createElement('pre');p.id='{_PROBE_ID}';"
    "p.textContent=JSON.stringify({images:imgs,violations:v});document.body.appendChild(p);});})();</script>"
)


def _find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_COMMANDS) if p), None)


def _install_chromium() -> str:
    """Install Debian's chromium with apt-get; return why it could not be done ("" on success)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root, so it cannot be installed here (apt-get install chromium)"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=120"]  # another session may be installing it right now
    for cmd in (["apt-get", *lock, "update"], ["apt-get", *lock, "install", "-y", "chromium"]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHROMIUM_INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` took more than {CHROMIUM_INSTALL_TIMEOUT_S} s"
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {last}"
    return ""


class HeadlessChromium:
    """Headless Chromium that loads local HTML files (see the ``chromium`` fixture).

    Examples
    --------
    >>> found, dom = chromium.probe(out / "report.html")  # doctest: +SKIP
    >>> assert found["violations"] == [] and all(i["naturalWidth"] > 0 for i in found["images"])
    >>> assert "<table" in dom
    """

    def __init__(self, executable: str, workdir: Path):
        self.executable, self.workdir = executable, workdir
        self._runs = 0

    def run(self, html: Path, *flags: str, timeout: float = 180) -> str:
        """Open ``html`` with extra ``flags``; return stdout (fails the test on error)."""
        self._runs += 1
        profile = self.workdir / f"profile-{self._runs}"
        cmd = [self.executable, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               "--virtual-time-budget=5000", *flags, Path(html).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chromium did not finish {html} within {timeout} s (a dialog or a page that never loads?)")
        if proc.returncode != 0:
            pytest.fail(f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}")
        return proc.stdout

    def dump_dom(self, html: Path) -> str:
        """The DOM of ``html`` after loading, serialised as HTML."""
        return self.run(html, "--dump-dom")

    def probe(self, html: Path) -> tuple[dict, str]:
        """Load a copy of ``html`` with the probe injected; return its findings and the DOM.

        The findings are ``{"images": [{"alt", "complete", "naturalWidth",
        "naturalHeight"}, ...], "violations": [...]}``: every ``<img>`` of the page in
        document order, and every request the page tried that was not a data: image or
        inline style (external files, scripts).
        """
        text = Path(html).read_text(encoding="utf-8")
        head = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
        assert head is not None, f"{html} has no <head>"
        self._runs += 1
        copy = self.workdir / f"probe-{self._runs}.html"
        copy.write_text(text[: head.end()] + _PROBE + text[head.end():], encoding="utf-8")
        dom = self.dump_dom(copy)
        found = re.search(rf'<pre id="{_PROBE_ID}">(.*?)</pre>', dom, flags=re.DOTALL)
        assert found is not None, f"the page never finished loading in Chromium: {dom[-500:]}"
        return json.loads(html_lib.unescape(found.group(1))), dom

    def screenshot(self, html: Path, png: Path, size: tuple[int, int] = (1200, 2000)) -> Path:
        """Save a ``size`` (width, height) screenshot of ``html`` to ``png``."""
        self.run(html, f"--screenshot={Path(png).resolve()}", f"--window-size={size[0]},{size[1]}")
        return Path(png)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory) -> HeadlessChromium:
    """Headless Chromium; installs Debian's ``chromium`` when absent, else skips with the reason."""
    executable = _find_chromium()
    if executable is None:
        why = _install_chromium()
        executable = _find_chromium()
        if executable is None:
            pytest.skip(f"headless Chromium is not installed and {why or 'the install did not provide it'}")
    return HeadlessChromium(executable, tmp_path_factory.mktemp("chromium"))


def mosaic_dataset(tiny_dataset, root):
    """Copy of the tiny dataset whose 4 test tiles sit 2 x 2 in one sample with its whole images."""
    shutil.copytree(tiny_dataset, root)
    raw = json.loads((root / "manifest.json").read_text())
    size = raw["tile_size"]
    image = np.zeros((2 * size, 2 * size), np.uint8)
    labels = np.zeros_like(image)
    test = [t for t in raw["tiles"] if t["split"] == "test"]
    for k, t in enumerate(test):
        r, c = (k // 2) * size, (k % 2) * size
        image[r : r + size, c : c + size] = np.asarray(Image.open(root / t["image"]))
        labels[r : r + size, c : c + size] = np.asarray(Image.open(root / t["mask"]))
        t.update(sample="mosaic", row=r, col=c)
    raw["samples"].append("mosaic")
    (root / "samples" / "mosaic").mkdir(parents=True)
    Image.fromarray(image).save(root / "samples" / "mosaic" / "sem_aligned.png")
    Image.fromarray(labels).save(root / "samples" / "mosaic" / "labels_aligned.png")
    (root / "manifest.json").write_text(json.dumps(raw))
    return root, image, labels
