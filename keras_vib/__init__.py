"""keras_vib: compress Keras models with the Variational Information Bottleneck."""

from keras_vib import export
from keras_vib.callbacks import VIBMonitor
from keras_vib.layers import VIBConv2D, VIBDense, VIBGate
from keras_vib.report import CompressionReport, compression_report
from keras_vib.slim import slim_model

__version__ = "0.1.0"

__all__ = [
    "VIBGate",
    "VIBDense",
    "VIBConv2D",
    "CompressionReport",
    "compression_report",
    "VIBMonitor",
    "slim_model",
    "export",
]
