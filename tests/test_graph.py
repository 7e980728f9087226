"""The flattened graph, its one walker and the channel analysis."""

import keras
import numpy as np
import pytest

import keras_vib as kv
from keras_vib import graph

L = keras.layers


def nested():
    """A functional model calling a Sequential block (twice: a shared
    layer) and a nested functional model with `training=False`."""
    block = keras.Sequential(
        [keras.Input((6,)), L.Dense(6, name="inner_dense")], name="block"
    )
    x_in = keras.Input((6,), name="x")
    base_in = keras.Input((6,))
    base = keras.Model(base_in, L.Dropout(0.5, name="drop")(base_in), name="base")
    x = block(x_in)
    y = block(x)  # the same layers, called again
    z = base(y, training=False)
    out = L.Dense(2, name="head")(L.Add(name="add")([x, z]))
    return keras.Model(x_in, out, name="outer")


def test_nested_models_are_flattened_in_topological_order():
    model = nested()
    g = graph.Graph(model)
    names = [node.layer.name for node in g.nodes]
    assert names == ["inner_dense", "inner_dense", "drop", "add", "head"]
    assert [node.index for node in g.nodes] == list(range(len(names)))
    # Every input a node reads was produced before it (or is a model input).
    made = set(g.inputs)
    for node in g.nodes:
        assert set(node.inputs) <= made, node.layer.name
        made |= set(node.outputs)
    assert set(g.outputs) <= made
    # The enclosing call's `training=False` reaches the inner layer.
    assert [node.training for node in g.nodes if node.layer.name == "drop"] == [False]


def test_rebuild_with_the_layers_themselves_computes_the_model():
    model = nested()
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    g = graph.Graph(model)
    (out,) = graph.evaluate(g, [x], g.outputs)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), atol=1e-6)


def test_rebuild_visits_each_call_once_in_order():
    g = graph.Graph(nested())
    seen = []

    def fn(node, values):
        assert all(k in values for k in node.inputs)
        seen.append(node.index)
        return graph.call(node, node.layer, values)

    graph.rebuild(g, {k: keras.ops.zeros((1, 6)) for k in g.inputs}, fn)
    assert seen == list(range(len(g.nodes)))


def test_a_subclassed_model_is_refused_by_name():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="model='net' of class Net"):
        graph.Graph(Net(name="net"))


def gated_mlp():
    return keras.Sequential(
        [
            keras.Input((5,)),
            kv.VIBDense(4, activation="relu", name="fc1"),
            kv.VIBDense(3, activation="relu", name="fc2"),
            L.Dense(2, name="out"),
        ]
    )


def open_units(layer, kept):
    """Opens the units of `layer` where `kept` is 1, closes the others."""
    kept = np.asarray(kept, bool)
    layer.gate.mu.assign(np.ones(kept.size, "float32"))
    layer.gate.log_sigma2.assign(np.where(kept, -20.0, 20.0).astype("float32"))


def test_analysis_marks_closed_units_constant_and_absent():
    model = gated_mlp()
    open_units(model.get_layer("fc1"), [1, 0, 1, 1])
    open_units(model.get_layer("fc2"), [1, 1, 0])
    analysis = graph.analyze(model)
    by_name = {node.layer.name: node for node in analysis.nodes}
    fc1 = analysis.tensors[by_name["fc1"].outputs[0]]
    fc2 = analysis.tensors[by_name["fc2"].outputs[0]]
    np.testing.assert_array_equal(fc1.var, [True, False, True, True])
    np.testing.assert_array_equal(fc2.var, [True, True, False])
    # `out` needs the value of the open units only: a closed one is a
    # constant, folded into `out`'s bias.
    np.testing.assert_array_equal(fc2.live, [True, True, False])
    np.testing.assert_array_equal(fc2.present, [True, True, False])
    out = analysis.tensors[analysis.outputs[0]]
    assert out.present.all()  # a model output keeps every channel
    assert analysis.producers()[by_name["fc2"].outputs[0]] == by_name["fc2"].index
    assert analysis.consumers()[by_name["fc1"].outputs[0]] == [
        (by_name["fc2"].index, 0)
    ]


def test_describe_names_layers_and_ops():
    layer = L.Dense(2, name="d")
    assert graph.describe(layer) == "layer 'd' of class Dense"


def test_the_analysis_leaves_the_graph_as_it_was():
    import dataclasses

    model = gated_mlp()
    structure = graph.Structure(model)
    node = structure.graph.nodes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.index = 5
    before = [(n.layer, n.inputs, n.outputs, n.index) for n in structure.graph.nodes]
    graph.analyze(structure)
    after = [(n.layer, n.inputs, n.outputs, n.index) for n in structure.graph.nodes]
    assert before == after


def test_one_structure_answers_for_any_kept_masks():
    model = gated_mlp()
    open_units(model.get_layer("fc1"), [1, 1, 1, 1])
    open_units(model.get_layer("fc2"), [1, 1, 1])
    structure = graph.Structure(model)
    fc1 = model.get_layer("fc1").gate
    as_is = kv.report.measure(graph.analyze(structure))
    masks = {id(fc1): np.array([True, False, False, True])}
    probed = kv.report.measure(graph.analyze(structure, masks))
    assert fc1.kept_mask().all()  # the masks wrote nothing into the gate
    # The same figures as if the gate itself had closed those units...
    open_units(model.get_layer("fc1"), [1, 0, 0, 1])
    assert kv.compression_report(model).to_dict() == probed.to_dict()
    assert as_is.kept_weights > probed.kept_weights
    assert as_is.flops > probed.flops


@keras.saving.register_keras_serializable(package="keras_vib_tests")
class DerivedConfig(L.Layer):
    """Records a derived value in its config, which its constructor refuses
    (as keras-hub's ViTPatchingAndEmbedding does)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), name="w")

    def call(self, x):
        return x @ self.w

    def get_config(self):
        return {**super().get_config(), "units": self.units, "twice": 2 * self.units}


@keras.saving.register_keras_serializable(package="keras_vib_tests")
class BrokenConfig(DerivedConfig):
    def get_config(self):
        return {**super().get_config(), "missing": self.not_an_attribute}


def test_a_layer_whose_config_records_derived_values_is_copied(tmp_path):
    inputs = keras.Input((4,))
    h = DerivedConfig(6, name="derived")(inputs)
    model = keras.Model(inputs, L.Dense(2)(kv.VIBDense(5, name="fc")(h)))
    gated = kv.add_gates(model)
    copy = gated.get_layer("derived")
    assert copy is not model.get_layer("derived")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gated(x)), keras.ops.convert_to_numpy(model(x))
    )
    # Its copy's config is what it was rebuilt from: it saves and reloads.
    gated.save(tmp_path / "gated.keras")
    again = keras.models.load_model(tmp_path / "gated.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(gated(x))
    )


class Unrebuildable(BrokenConfig):
    """Its constructor's argument is stored under another name."""

    def __init__(self, size, **kwargs):
        super().__init__(size, **kwargs)


def test_a_layer_whose_config_does_not_read_back_is_copied_from_its_attributes(
    tmp_path,
):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(BrokenConfig(6, name="broken")(inputs)))
    gated = kv.add_gates(model)
    copy = gated.get_layer("broken")
    assert copy is not model.get_layer("broken") and copy.units == 6
    assert copy.w is not model.get_layer("broken").w
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(gated(x)), keras.ops.convert_to_numpy(model(x))
    )
    gated.save(tmp_path / "gated.keras")  # the arguments it was rebuilt from
    again = keras.models.load_model(tmp_path / "gated.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(gated(x))
    )


def test_a_product_by_a_constant_stays_dense_and_reloads(tmp_path):
    """Keras marks `x * c` (a constant) sparse, which the layers after it
    cannot trace when a saved model is rebuilt: the copy is a Rescaling."""
    inputs = keras.Input((None, 4))
    x = inputs * keras.ops.cast(keras.ops.sqrt(4.0), "float32")
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(3, name="h")(x)))
    gated = kv.add_gates(model)
    assert any(isinstance(la, L.Rescaling) for la in gated.layers)
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(gated(x)), keras.ops.convert_to_numpy(model(x))
    )
    gated.save(tmp_path / "gated.keras")
    again = keras.models.load_model(tmp_path / "gated.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(gated(x))
    )


def test_a_layer_that_does_not_rebuild_is_refused_by_name():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(Unrebuildable(6, name="broken")(inputs)))
    with pytest.raises(ValueError, match="'broken' of class Unrebuildable.*own config"):
        kv.add_gates(model)
