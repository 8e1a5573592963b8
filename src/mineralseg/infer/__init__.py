"""Inference on whole images: overlapping windows blended into one map."""

from mineralseg.infer.sliding import (
    edge_weights,
    predict_class_bands,
    predict_classes,
    predict_probabilities,
    predict_probability_bands,
    window_starts,
)

__all__ = [
    "edge_weights",
    "predict_class_bands",
    "predict_classes",
    "predict_probabilities",
    "predict_probability_bands",
    "window_starts",
]
