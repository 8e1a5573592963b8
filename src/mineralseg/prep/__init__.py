"""mineralseg.prep: SEM / QEMSCAN pairs -> a tiled training dataset.

One module per step, each a set of numpy-in / numpy-out functions:

- :mod:`~mineralseg.prep.config`: the ``prepare.yaml`` models;
- :mod:`~mineralseg.prep.outline`: where the section is (SEM and label map);
- :mod:`~mineralseg.prep.mosaic`: QEMSCAN seam detection and repair (a package: junk
  evidence, pitch comb, field grid, shifts, reassembly, the repair and its trust);
- :mod:`~mineralseg.prep.registration`: label map -> SEM affine transform (a package:
  geometry, coarse placement, ECC refinement, scoring);
- :mod:`~mineralseg.prep.resample`: the SEM on the working grid, strip by strip;
- :mod:`~mineralseg.prep.intensity`: drift removal and percentile stretch;
- :mod:`~mineralseg.prep.tiling`, :mod:`~mineralseg.prep.splits`: tiles and splits;
- :mod:`~mineralseg.prep.qa`: figures to check each step;
- :mod:`~mineralseg.prep.pipeline`: :func:`~mineralseg.prep.pipeline.prepare` runs them
  all and writes the dataset folder.
"""
