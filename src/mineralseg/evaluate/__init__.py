"""mineralseg.evaluate: scoring models and maps.

Two layers live here (docs/ARCHITECTURE.md):

- the verbs, which run a prediction and write reports: :mod:`~mineralseg.evaluate.evaluate`
  (``mineralseg evaluate``: a checkpoint on a dataset split) and
  :mod:`~mineralseg.evaluate.compare` (``mineralseg compare``: a predicted map against a
  QEMSCAN map);
- the parts that :mod:`mineralseg.infer` and :mod:`mineralseg.report` use too:
  :mod:`~mineralseg.evaluate.checkpoint` (load a model and its card),
  :mod:`~mineralseg.evaluate.metrics` (one confusion matrix over the whole set),
  :mod:`~mineralseg.evaluate.mineralogy` (area % per mineral, porosity),
  :mod:`~mineralseg.evaluate.figures` and :mod:`~mineralseg.evaluate.tables`.

The classical baselines (multi-Otsu, random forest) are models: :mod:`mineralseg.models.classical`.
"""
