"""keras_vib: compress Keras models with the Variational Information Bottleneck."""

import contextlib

from keras_vib import _native

# TensorFlow's lines before its logging starts (CUDA probes on a CPU machine,
# oneDNN notices), printed as Keras (or a module below) loads it, go to the
# void; its later logging follows TF_CPP_MIN_LOG_LEVEL as ever, and a user's
# TF_CPP_MIN_LOG_LEVEL=0 shows them.
with _native.quiet_stderr() if _native.quiet_import() else contextlib.nullcontext():
    from keras_vib import datasets, export, gates, handlers, models, recipes
    from keras_vib.budget import VIBBudget
    from keras_vib.callbacks import VIBMonitor, VIBProgbarLogger
    from keras_vib.datasets import DatasetNotFoundError
    from keras_vib.gating import add_gates
    from keras_vib.guard import VIBGuard
    from keras_vib.handlers import register_layer, unregister_layer
    from keras_vib.layers import (
        VIBConv2D,
        VIBDense,
        VIBGate,
        VIBGroupQueryAttention,
        VIBMultiHeadAttention,
    )
    from keras_vib.lm import causal_lm
    from keras_vib.models import get_model, lenet5_caffe, lenet_300_100, vgg16
    from keras_vib.report import CompressionReport, compression_report
    from keras_vib.slim import slim_model
    from keras_vib.warmup import VIBWarmup

__version__ = "0.1.0"

__all__ = [
    "VIBGate",
    "VIBDense",
    "VIBConv2D",
    "VIBMultiHeadAttention",
    "VIBGroupQueryAttention",
    "CompressionReport",
    "compression_report",
    "VIBMonitor",
    "VIBProgbarLogger",
    "VIBWarmup",
    "VIBBudget",
    "VIBGuard",
    "slim_model",
    "add_gates",
    "causal_lm",
    "register_layer",
    "unregister_layer",
    "handlers",
    "export",
    "datasets",
    "models",
    "recipes",
    "gates",
    "DatasetNotFoundError",
    "get_model",
    "lenet_300_100",
    "lenet5_caffe",
    "vgg16",
]
