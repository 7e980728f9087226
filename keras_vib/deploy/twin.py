"""The tf_keras (Keras 2) twin of a slim model, and quantization-aware
training through tensorflow-model-optimization, which accepts tf_keras
models only."""

from keras_vib import graph
from keras_vib.deploy._common import _check_model
from keras_vib.gates import has_gates
from keras_vib.handlers.structure import select_features_twin
from keras_vib.slim import slim_model

__all__ = ["select_features_twin", "to_tf_keras", "quantization_aware"]


def to_tf_keras(model):
    """Builds the tf_keras (Keras 2) twin of a stock Keras 3 model.

    Same architecture, layer names and weights, made of `tf_keras.layers`,
    for tools that only take tf_keras models (tensorflow-model-optimization).
    A gated model is slimmed first.

    Args:
        model: a built Sequential or functional Keras 3 model of stock
            layers and `SelectFeatures` (the output of `slim_model`), or a
            gated model.

    Returns:
        A functional `tf_keras.Model`.
    """
    import tf_keras

    _check_model(model)
    if has_gates(model):
        model = slim_model(model)
    g = graph.Graph(model)

    def twin_node(node, values):
        layer = node.layer
        twin = node.handler.twin(node, tf_keras)
        args = [values[t] for t in node.inputs]
        out = twin(args if len(args) > 1 else args[0])
        twin.set_weights(layer.get_weights())
        return out if isinstance(out, (list, tuple)) else [out]

    new_inputs, values = [], {}
    for t in g.inputs:
        x = g.symbols[t]
        inp = tf_keras.Input(shape=tuple(x.shape[1:]), name=x.name, dtype=x.dtype)
        new_inputs.append(inp)
        values[t] = inp
    values = graph.rebuild(g, values, twin_node)
    new_outputs = [values[t] for t in g.outputs]
    return tf_keras.Model(
        new_inputs if len(new_inputs) > 1 else new_inputs[0],
        new_outputs if len(new_outputs) > 1 else new_outputs[0],
        name=model.name,
    )


def quantization_aware(model):
    """Wraps the tf_keras twin of a slim model for quantization-aware training.

    tensorflow-model-optimization 0.8 only accepts tf_keras (Keras 2)
    models, so this builds the twin (`to_tf_keras`: same architecture, same
    weights) and applies `tfmot.quantization.keras.quantize_model` to it.
    Compile the result (with tf_keras optimizers and losses, or their string
    names) and `fit` it, then pass it to `to_tflite(..., "int8", ...)`.

    Args:
        model: a slim Keras 3 model (or a gated one, slimmed first).

    Returns:
        The quantization-aware `tf_keras.Model`, not compiled.

    Example:

    >>> qat = keras_vib.export.quantization_aware(slim)
    >>> qat.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    >>> qat.fit(train_ds, epochs=1)
    >>> int8 = keras_vib.export.to_tflite(qat, "int8", x_train[:500])
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    quantize = tfmot.quantization.keras
    twin = to_tf_keras(model)
    fusable = _bn_after_linear_conv(twin)

    class NoOpQuantizeConfig(quantize.QuantizeConfig):
        """Leaves a layer in float (tfmot has no rule for it)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    registry = quantize.default_8bit.Default8BitQuantizeRegistry()

    def annotate(layer):
        if registry.supports(layer) or layer.name in fusable:
            return quantize.quantize_annotate_layer(layer)
        # The per-channel scales slim_model inserts (a BatchNormalization
        # that does not follow a conv), say: tfmot has no rule for them.
        return quantize.quantize_annotate_layer(layer, NoOpQuantizeConfig())

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    with quantize.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        return quantize.quantize_apply(annotated)


def _bn_after_linear_conv(model):
    """Names of the BatchNormalization layers tfmot folds into a conv.

    The classes are those of `tf_keras.layers`, the layers of the Keras 2
    twin: they describe tfmot's fold pattern (a BatchNormalization right
    after a Conv2D or DepthwiseConv2D without activation), not a kind of
    keras_vib layer, so they are no business of the handler registry. Exact
    types, as tfmot's pattern matches exact class names (a
    Conv2DTranspose, a subclass of Conv2D, is not folded).
    """
    import tf_keras

    convs = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)
    names = set()
    for layer in model.layers:
        if type(layer) is not tf_keras.layers.BatchNormalization:
            continue
        inbound = layer.inbound_nodes[0].inbound_layers
        if (
            type(inbound) in convs
            and inbound.get_config().get("activation") == "linear"
        ):
            names.add(layer.name)
    return names
