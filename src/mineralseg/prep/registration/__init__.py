"""Automatic affine registration of a label map (QEMSCAN) onto an SEM image.

The original study aligned each pair by hand (largest contour, crop, a hand-found
rotation of 0.48 degrees and hand-found offsets). Here the transform is estimated in
two steps and scored:

1. **coarse**: the sample outline in both images (:mod:`mineralseg.prep.outline`) gives
   a similarity transform from its moments: centroids, sqrt(area) ratio for the scale,
   principal axes for the rotation when the outline is elongated (for round or square
   sections the rotation is left to step 2).
2. **fine**: the SEM is area-downscaled to about the label resolution, the label map is
   rendered as an intensity image (each id gets the median SEM grey of its pixels under
   the outline alignment) and a full affine transform is refined with OpenCV's ECC
   maximisation, coarse to fine on an image pyramid, after a rotation search over the
   accepted range at the coarsest level. A last pass renders each id with its mean grey
   under the refined alignment and refines once more without smoothing.
3. **score**: normalised mutual information between label ids and SEM grey levels on the
   label grid, for the naive "stretch the map over the image" alignment, the outline
   alignment and the final one.

Geometry (see docs/CONTRACTS.md): ``label_to_sem`` is a 3x3 matrix ``M`` with
``[x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]``, x = column, y = row, pixel centres at
integer coordinates, in full-resolution SEM pixels. An image area-downscaled by a factor
``f`` (output pixel ``i`` covers source ``[i f, (i + 1) f)``) has its pixel centre ``u``
at ``x_sem = (u + 0.5) f - 0.5``.

The package follows these parts, one module each:

- :mod:`~mineralseg.prep.registration.geometry`: the matrices and their read-outs
  (:func:`corner_error`, :func:`affine_decomposition`, :func:`stretch_matrix`);
- :mod:`~mineralseg.prep.registration.coarse`: step 1 (:func:`coarse_similarity`);
- :mod:`~mineralseg.prep.registration.ecc`: step 2 (rendering, pyramid, ECC);
- :mod:`~mineralseg.prep.registration.scoring`: step 3 and the grid sampling
  (:func:`registration_score`, :func:`sem_to_label_grid`);
- :mod:`~mineralseg.prep.registration.register`: the entry point
  (:func:`register_labels_to_sem`, :class:`RegistrationOptions`, :class:`RegistrationResult`).

This ``__init__`` only re-exports the public names.
"""

from mineralseg.prep.registration.coarse import coarse_similarity
from mineralseg.prep.registration.geometry import affine_decomposition, corner_error, stretch_matrix
from mineralseg.prep.registration.register import (
    RegistrationOptions,
    RegistrationResult,
    register_labels_to_sem,
)
from mineralseg.prep.registration.scoring import registration_score, sem_to_label_grid

__all__ = [
    "RegistrationOptions",
    "RegistrationResult",
    "affine_decomposition",
    "coarse_similarity",
    "corner_error",
    "register_labels_to_sem",
    "registration_score",
    "sem_to_label_grid",
    "stretch_matrix",
]
