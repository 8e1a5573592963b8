"""Synthetic SEM/QEMSCAN twin with a known truth (tests, demo, benchmarks).

:func:`generate_sample` makes one pair in memory; :func:`write_synth_dataset` writes a
dataset folder with a ready ``prepare.yaml``; :func:`sem_on_label_grid` resamples an
SEM onto the label grid through ``label_to_sem``.
"""

from mineralseg.synth.dataset import sample_seed, write_synth_dataset
from mineralseg.synth.grids import inside_sem, label_to_sem_matrix, sem_on_label_grid
from mineralseg.synth.sample import SynthSample, generate_sample

__all__ = [
    "SynthSample",
    "generate_sample",
    "inside_sem",
    "label_to_sem_matrix",
    "sample_seed",
    "sem_on_label_grid",
    "write_synth_dataset",
]
