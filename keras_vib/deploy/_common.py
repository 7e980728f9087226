"""Small helpers of the deployment modules: TensorFlow on demand, and the
check that a model is one they take (Keras 3, or a tf_keras twin)."""

import keras

__all__ = []


def _tf():
    import tensorflow as tf

    return tf


def _is_tf_keras(model):
    return type(model).__module__.startswith("tf_keras")


def _check_model(model):
    if _is_tf_keras(model):
        inputs = model.inputs
    elif isinstance(model, keras.Model):
        inputs = getattr(model, "inputs", None)
    else:
        raise ValueError(
            "Expected `model` to be a Keras model (Keras 3, or the tf_keras "
            f"model of `quantization_aware`). Received: model={model!r}"
        )
    if not inputs:
        raise ValueError(
            "Expected a built model with known inputs (a Sequential or "
            f"functional model). Received: model={model.name!r} has no inputs."
        )
    for x in inputs:
        shape = x.shape
        rank = getattr(shape, "rank", None) if _is_tf_keras(model) else len(shape)
        if shape is None or rank is None:
            raise ValueError(
                "Expected every model input to have a known rank. Received: "
                f"input {x.name!r} with shape {shape}"
            )
