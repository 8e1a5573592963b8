"""Inference on whole images: overlapping windows blended into one map."""

from mineralseg.infer.onnx import OnnxPredictor, export_onnx, load_onnx
from mineralseg.infer.sliding import (
    blend_bands,
    edge_weights,
    predict_class_bands,
    predict_classes,
    predict_probabilities,
    predict_probability_bands,
    window_starts,
)

__all__ = [
    "OnnxPredictor",
    "export_onnx",
    "load_onnx",
    "blend_bands",
    "edge_weights",
    "predict_class_bands",
    "predict_classes",
    "predict_probabilities",
    "predict_probability_bands",
    "window_starts",
]
