"""Deployment: conversion to TFLite, the LiteRT runtime, the tf_keras twin.

Three floors over the small shared helpers of `_common`, each importing
only downward (and none of them `keras_vib.export`, the users' module that
gathers their names):

- `convert`: `to_tflite`, `QUANTIZATIONS`;
- `formats`: `to_onnx`, `to_saved_model`, `FORMATS`;
- `litert`: `run_tflite`, `evaluate_tflite`, `benchmark_tflite`,
  `tflite_ops`, `KERNELS`;
- `profile`: `profile_tflite`, `op_models`, `padded_op` (over `litert`);
- `twin`: `to_tf_keras`, `quantization_aware` (and `select_features_twin`,
  the twin of `SelectFeatures`).
"""

from keras_vib.deploy.convert import QUANTIZATIONS, to_tflite
from keras_vib.deploy.formats import FORMATS, to_onnx, to_saved_model
from keras_vib.deploy.litert import (
    KERNELS,
    benchmark_tflite,
    evaluate_tflite,
    run_tflite,
    tflite_ops,
)
from keras_vib.deploy.profile import op_models, padded_op, profile_tflite
from keras_vib.deploy.twin import quantization_aware, select_features_twin, to_tf_keras

__all__ = [
    "QUANTIZATIONS",
    "FORMATS",
    "to_tflite",
    "to_onnx",
    "to_saved_model",
    "run_tflite",
    "evaluate_tflite",
    "benchmark_tflite",
    "tflite_ops",
    "profile_tflite",
    "op_models",
    "padded_op",
    "to_tf_keras",
    "quantization_aware",
    "select_features_twin",
    "KERNELS",
]
