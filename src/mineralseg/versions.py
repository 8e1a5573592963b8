"""Versions of Python and the packages behind a result (saved beside every output)."""

from __future__ import annotations

import platform
from importlib import metadata

#: Packages whose versions every run records (absent ones are left out).
RECORDED_PACKAGES = (
    "mineralseg", "numpy", "scipy", "scikit-image", "opencv-python-headless", "tifffile", "zarr",
    "pydantic", "matplotlib", "torch", "lightning", "segmentation-models-pytorch", "timm",
    "albumentations", "torchmetrics",
)


def package_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """``{"python": ..., <package>: <version>}`` for the installed ``packages``."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
