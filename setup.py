"""Packaging for keras_vib."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "keras_vib" / "__init__.py").read_text()
).group(1)

ONNX = ["onnx", "onnxruntime", "tf2onnx"]
HUB = ["keras-hub>=0.32", "tensorflow-text>=2.21,<2.22"]

setup(
    name="keras-vib",
    version=VERSION,
    description=(
        "Compress Keras 3 models with the Variational Information Bottleneck "
        "(VIBNet): prune whole neurons and channels, then cut them out."
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["keras_vib", "keras_vib.*"]),
    # The command's entry point, outside the package: it parses the
    # arguments before anything imports TensorFlow.
    py_modules=["_keras_vib_cli"],
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorflow-datasets>=4.9.10",
        # tensorflow-datasets needs it on Python 3.11 but does not declare it.
        "importlib_resources",
        "tensorflow-model-optimization>=0.8.1",
        # tfmot works on tf_keras (Keras 2) models only; keep it in step with TF.
        "tf-keras>=2.21,<2.22",
        "ai-edge-litert>=2.3",
        "numpy",
        "matplotlib",
    ],
    extras_require={
        # keras-hub's models (BERT, ViT, Gemma...): its layers' handlers load
        # when a model holds one. tensorflow-text in step with TensorFlow.
        "hub": HUB,
        # `keras-vib export --format onnx` / keras_vib.export.to_onnx.
        "onnx": ONNX,
        "test": ["pytest", "ruff", "tensorboard", "jax"] + HUB + ONNX,
    },
    entry_points={"console_scripts": ["keras-vib=_keras_vib_cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
