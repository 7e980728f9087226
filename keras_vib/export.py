"""Deployment: conversion to TFLite (LiteRT), ONNX and SavedModel, running
the LiteRT result, QAT.

The users' module: every name is that of `keras_vib.deploy`, where the work
is done in three modules. `to_tflite` slims a gated model and converts it
with Keras' own LiteRT exporter (`model.export(..., format="litert")`);
`to_onnx` and `to_saved_model` write the slim model for ONNX Runtime
and TF Serving; `run_tflite`, `evaluate_tflite`, `benchmark_tflite`, `tflite_ops` and
`profile_tflite` (each operator timed on its own) run and inspect the
result in LiteRT; `to_tf_keras` and `quantization_aware`
build the tf_keras (Keras 2) twin of a slim model for quantization-aware
training with tensorflow-model-optimization.

Example:

>>> tflite = keras_vib.export.to_tflite(gated, "int8", x_train[:500])
>>> keras_vib.export.evaluate_tflite(tflite, test_ds)
"""

from keras_vib.deploy import (
    FORMATS,
    KERNELS,
    QUANTIZATIONS,
    benchmark_tflite,
    evaluate_tflite,
    op_models,
    padded_op,
    profile_tflite,
    quantization_aware,
    run_tflite,
    select_features_twin,
    tflite_ops,
    to_onnx,
    to_saved_model,
    to_tf_keras,
    to_tflite,
)

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
