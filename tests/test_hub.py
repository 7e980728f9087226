"""keras-hub (issue 25, item 4): its composite layers opened into their
sublayers, its BERT-family backbones gated inside (heads and feed-forward
units), dict inputs and outputs kept, ALBERT's shared block kept shared."""

import pathlib
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from contract import assert_close, check_contract

import keras_vib as kv

keras_hub = pytest.importorskip("keras_hub")
sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
from hub_models import BACKBONES  # noqa: E402

L = keras.layers

# The text backbones whose heads and FFN units keras_vib cuts today.
ENCODERS = ["BERT", "RoBERTa", "DistilBERT", "ALBERT", "ELECTRA", "GPT-2", "OPT"]
# The decoders of rotary attention whose key/value heads it cuts (keras-hub's
# attention layers that take `head_dim`).
ROTARY = ["Llama", "Mistral", "Qwen2", "Qwen3", "Gemma", "Gemma3"]


def quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the residual stream
        return fn(*args, **kwargs)


def embedding_params(model):
    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if "embedding" in type(layer).__name__.lower()
        for w in layer.weights
    )


def half_closed(model, x, rng=None):
    """`add_gates(model)` (computing what `model` does), half of every
    gate's units closed (the first half, or a random one from `rng`), and
    `slim_model` of it (computing what the gated model does, with the
    parameters the report counts): `(gated, slim)`."""
    gated = quietly(kv.add_gates, model)
    assert_close(gated(x, training=False), model(x, training=False))
    for _, gate in kv.gates.gates(gated):
        n = gate.units
        gate.set_kept((np.arange(n) if rng is None else rng.permutation(n)) < n // 2)
    slim = kv.slim_model(gated)
    assert_close(slim(x), gated(x, training=False), 1e-4)
    assert slim.count_params() == kv.compression_report(gated).kept_params
    return gated, slim


@pytest.mark.parametrize("name", ENCODERS)
def test_an_encoder_backbone_is_gated_inside_and_slims(name, tmp_path):
    rng = np.random.default_rng(0)
    model, x = BACKBONES[name](rng)
    gated, slim = quietly(check_contract, model, x, rng, tmp_path=tmp_path)
    kinds = {type(layer).__name__ for _, layer in kv.gates.gated_layers(gated)}
    assert kinds == {"VIBMultiHeadAttention", "VIBGate"}  # heads, FFN units
    # Dict inputs and outputs, by their names.
    assert isinstance(slim.input, dict) and set(slim.input) == set(x)
    assert type(slim.output) is type(gated.output) is type(model.output)
    if isinstance(model.output, dict):  # BERT: sequence and pooled outputs
        assert set(slim.output) == set(model.output)


@pytest.mark.parametrize("name", ROTARY)
def test_a_rotary_decoder_s_heads_are_cut(name, tmp_path):
    rng = np.random.default_rng(0)
    model, x = BACKBONES[name](rng)
    gated, slim = quietly(check_contract, model, x, rng, tmp_path=tmp_path)
    kinds = {type(layer).__name__ for _, layer in kv.gates.gated_layers(gated)}
    assert kinds == {"VIBAttentionHeads", "VIBGate"}  # heads, FFN units
    if name == "Llama":  # its class takes no head_dim: Mistral's takes it
        assert {type(la).__name__ for la in slim.layers} >= {"CachedMistralAttention"}
    heads = {
        layer.name: kv._keras.attribute(layer, "num_key_value_heads")
        for layer in slim.layers
        if kv._keras.has_attention_hook(layer)
    }
    kept = {n: g.num_kept() for n, g in kv.gates.gated_layers(gated) if n in heads}
    assert heads == kept and len(heads) == 2


@pytest.mark.parametrize("name", ["Mistral", "Gemma"])
def test_a_rotary_decoder_trains_and_reloads_gated(name, tmp_path):
    rng = np.random.default_rng(2)
    model, x = BACKBONES[name](rng)
    gated = quietly(kv.add_gates, model, kl_weight=1.0)
    y = keras.ops.convert_to_numpy(model(x))
    gated.compile("adam", "mse")
    (_, heads), *_ = kv.gates.gates(gated)
    before = keras.ops.convert_to_numpy(heads.log_alpha())
    gated.fit(x, y, epochs=2, verbose=0)
    assert not np.allclose(keras.ops.convert_to_numpy(heads.log_alpha()), before)
    path = tmp_path / "gated.keras"
    gated.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert_close(loaded(x, training=False), gated(x, training=False))
    # FLOPs at the size it trained on (recorded by add_gates).
    report = kv.compression_report(gated)
    assert report.input_shape == [(8,), (8,)] and report.flops > 0


@pytest.mark.parametrize("name", ENCODERS + ROTARY + ["DeBERTaV3", "DeiT"])
def test_half_of_every_gate_closed_meets_the_issue_targets(name):
    """At most 85 % of the parameters, 60 % of those outside the embeddings."""
    rng = np.random.default_rng(1)
    model, x = BACKBONES[name](rng)
    gated = quietly(kv.add_gates, model)
    for _, gate in kv.gates.gates(gated):
        gate.set_kept(np.arange(gate.units) < gate.units // 2)
    slim = kv.slim_model(gated)
    ratio = slim.count_params() / model.count_params()
    embeddings = embedding_params(model)
    outside = (slim.count_params() - embeddings) / (model.count_params() - embeddings)
    assert ratio <= 0.85 and outside <= 0.60, (ratio, outside)
    assert_close(slim(x), gated(x, training=False), 1e-4)


def test_albert_s_shared_block_stays_shared():
    rng = np.random.default_rng(2)
    model, x = BACKBONES["ALBERT"](rng)
    gated = quietly(kv.add_gates, model)
    # One block, called twice: one gate on its heads, one on its FFN.
    assert len(kv.gates.gates(gated)) == 2
    slim = kv.slim_model(gated)
    attention = [
        layer for layer in slim.layers if isinstance(layer, L.MultiHeadAttention)
    ]
    assert len(attention) == 1
    calls = [n for n in slim.operations if n is attention[0]]
    assert len(calls) == 1


def test_keras_hub_layers_in_a_functional_model(tmp_path):
    """The issue's row: TokenAndPositionEmbedding -> 2 x TransformerEncoder
    -> pooling -> Dense."""
    rng = np.random.default_rng(3)
    tokens = keras.Input((8,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(64, 8, 16)(tokens)
    for i in range(2):
        x = keras_hub.layers.TransformerEncoder(32, 4, name=f"block{i}")(x)
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(x)))
    x = rng.integers(0, 64, (3, 8)).astype("int32")
    gated, slim = quietly(check_contract, model, x, rng, tmp_path=tmp_path)
    assert len(kv.gates.gates(gated)) == 4


def test_a_user_s_composite_layer_through_register_layer():
    @keras.saving.register_keras_serializable(package="test_hub")
    class Block(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.up = L.Dense(12, activation="relu", name="up")
            self.down = L.Dense(6, name="down")

        def call(self, x):
            return x + self.down(self.up(x))

    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(2)(Block(name="block")(inputs)))
    x = np.random.default_rng(4).normal(size=(4, 6)).astype("float32")
    model(x)
    assert not kv.gates.gates(quietly(kv.add_gates, model))  # opaque
    with kv.handlers.registered(Block, kv.handlers.Composite()):
        gated, slim = check_contract(model, x, np.random.default_rng(5))
    assert "up_gate" in [name for name, _ in kv.gates.gates(gated)]
    assert "block" not in [layer.name for layer in slim.layers]  # opened


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_of_the_table_gates_and_slims(name):
    """No crash on any backbone of the coverage table: the gated model
    computes the original's function, the slim one the gated one's (those
    whose blocks are not opened yet have no gate: BENCHMARKS.md says why)."""
    model, x = BACKBONES[name](np.random.default_rng(6))
    half_closed(model, x)


@pytest.mark.parametrize(
    "name, task",
    [("BERT", "BertTextClassifier"), ("ViT", "ViTImageClassifier")],
)
def test_the_slim_backbone_plugs_into_its_task(name, task):
    """Item 5: the slim backbone in the keras-hub task it came from
    computes what the gated one does there (the task's head copied)."""
    rng = np.random.default_rng(7)
    model, x = BACKBONES[name](rng)
    gated = quietly(kv.add_gates, model)
    for _, gate in kv.gates.gates(gated):
        gate.set_kept(np.arange(gate.units) < gate.units // 2)
    slim = kv.slim_model(gated)
    cls = getattr(keras_hub.models, task)
    with_gated = cls(backbone=gated, num_classes=3, preprocessor=None)
    with_slim = cls(backbone=slim, num_classes=3, preprocessor=None)
    for layer in with_gated.layers:
        if layer is not gated and layer.weights:  # the task's head
            with_slim.get_layer(layer.name).set_weights(layer.get_weights())
    assert_close(with_slim(x), with_gated(x), 1e-4)
    assert slim.count_params() < 0.85 * model.count_params()


def test_a_whole_task_is_gated_and_slimmed():
    """A keras-hub task (a functional model around its backbone): its
    backbone's units and its head's are gated, the slim task equals it."""
    rng = np.random.default_rng(8)
    backbone, x = BACKBONES["BERT"](rng)
    task = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    gated, slim = quietly(check_contract, task, x, rng)
    assert "pooled_dense_gate" in [name for name, _ in kv.gates.gates(gated)]


def test_a_decoder_with_cross_attention_of_any_length(tmp_path):
    """keras-hub's TransformerDecoder: its causal self-attention and its
    cross-attention heads, on sequences of any length."""
    rng = np.random.default_rng(9)
    source = keras.Input((None,), dtype="int32", name="source")
    target = keras.Input((None,), dtype="int32", name="target")
    encoded = keras_hub.layers.TokenAndPositionEmbedding(64, 16, 16)(source)
    encoded = keras_hub.layers.TransformerEncoder(32, 4, name="encoder")(encoded)
    x = keras_hub.layers.TokenAndPositionEmbedding(64, 16, 16)(target)
    x = keras_hub.layers.TransformerDecoder(32, 4, name="decoder")(x, encoded)
    model = keras.Model([source, target], L.Dense(64, name="logits")(x))
    batch = [
        rng.integers(1, 64, (2, 7)).astype("int32"),
        rng.integers(1, 64, (2, 5)).astype("int32"),
    ]
    gated, slim = quietly(check_contract, model, batch, rng, tmp_path=tmp_path)
    kinds = [type(layer).__name__ for _, layer in kv.gates.gated_layers(gated)]
    assert kinds.count("VIBMultiHeadAttention") == 3  # self, self, cross
    # Causal: the first target token does not see the others.
    other = [batch[0], batch[1].copy()]
    other[1][:, 1:] = 1
    first = keras.ops.convert_to_numpy(slim(batch))[:, 0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(other))[:, 0], first, atol=1e-5
    )


def test_a_decoder_s_banded_causal_mask_is_kept():
    """Mistral's sliding window: the opened block masks as the original."""
    rng = np.random.default_rng(10)
    model, x = BACKBONES["Mistral"](rng)
    small = keras_hub.models.MistralBackbone.from_config(
        {**model.get_config(), "sliding_window": 3}
    )
    small.set_weights(model.get_weights())
    gated = quietly(kv.add_gates, small)
    assert kv.gates.gates(gated)  # its feed-forward units
    assert_close(gated(x, training=False), small(x, training=False))
    assert not np.allclose(
        keras.ops.convert_to_numpy(small(x)), keras.ops.convert_to_numpy(model(x))
    )  # the band changes the output: the check above could fail


PROMPT = {
    "token_ids": np.array(
        [[5, 7, 9, 0, 0, 0, 0, 0], [3, 4, 0, 0, 0, 0, 0, 0]], "int32"
    ),
    "padding_mask": np.array(
        [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], bool
    ),
}


def _generate(lm, stop_token_ids=None):
    out = lm.generate(PROMPT, max_length=8, stop_token_ids=stop_token_ids)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["Gemma", "Llama"])
def test_a_slim_decoder_generates_the_gated_model_s_tokens(name):
    """`causal_lm`: keras-hub's `generate` on a gated and on a slim decoder
    (per-layer head counts, no cache): the same greedy tokens; on the
    original backbone, the tokens of keras-hub's own cached causal LM."""
    rng = np.random.default_rng(0)
    model, _ = BACKBONES[name](rng)
    task = getattr(keras_hub.models, f"{name}CausalLM")(backbone=model)
    task.compile(sampler="greedy")
    expected = _generate(task)
    plain = _generate(kv.causal_lm(model))["token_ids"]
    np.testing.assert_array_equal(plain, expected["token_ids"])
    stops = (int(expected["token_ids"][0, 4]),)  # a token it generates
    with_stops = _generate(kv.causal_lm(model), stops)
    for key, value in _generate(task, stops).items():
        np.testing.assert_array_equal(with_stops[key], value)
    assert not with_stops["padding_mask"].all()

    gated = quietly(kv.add_gates, model)
    for _, gate in kv.gates.gates(gated):
        gate.set_kept(rng.permutation(gate.units) < gate.units // 2)
    slim = kv.slim_model(gated)
    heads = {
        kv._keras.attribute(layer, "num_key_value_heads")
        for layer in slim.layers
        if kv._keras.has_attention_hook(layer)
    }
    assert max(heads) < model.num_key_value_heads
    lm = kv.causal_lm(slim)
    assert isinstance(lm, keras_hub.models.CausalLM)
    tokens = _generate(lm)["token_ids"]
    np.testing.assert_array_equal(tokens, _generate(kv.causal_lm(gated))["token_ids"])
    mask = PROMPT["padding_mask"]  # the prompts are kept
    np.testing.assert_array_equal(tokens[mask], PROMPT["token_ids"][mask])


def test_causal_lm_refuses_what_it_cannot_wrap(tmp_path):
    model, _ = BACKBONES["Gemma"](np.random.default_rng(0))
    with pytest.raises(ValueError, match="token_embedding='embeddings'"):
        kv.causal_lm(model, token_embedding="embeddings")
    encoder = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(ValueError, match="'token_ids' and 'padding_mask'"):
        kv.causal_lm(encoder)
    lm = kv.causal_lm(model)
    with pytest.raises(NotImplementedError, match="save the model it wraps"):
        lm.save(tmp_path / "lm.keras")
    assert not (tmp_path / "lm.keras").exists()


def test_qwen2_s_slim_heads_are_gpt_oss_attention_and_gate_again(tmp_path):
    """Qwen2's attention takes no head size: its slim layers are keras-hub's
    GPT-OSS attention (sinks at -1e30, no window), which is gated in turn
    (a sink logit per query head, cut with its head)."""
    rng = np.random.default_rng(3)
    model, x = BACKBONES["Qwen2"](rng)
    gated = quietly(kv.add_gates, model)
    for _, gate in kv.gates.gates(gated):
        gate.set_kept(rng.permutation(gate.units) < max(1, gate.units // 2))
    slim = kv.slim_model(gated)
    attention = [la for la in slim.layers if type(la).__name__ == "GptOssAttention"]
    assert len(attention) == 2
    for layer in attention:
        assert layer.sliding_window is None and layer.num_key_value_heads == 1
        np.testing.assert_array_equal(layer.sinks.numpy(), np.float32(-1e30))
    assert_close(slim(x), gated(x, training=False), 1e-4)
    # The slim model, gated again: its GPT-OSS heads are units too.
    regated, reslim = quietly(check_contract, slim, x, rng, tmp_path=tmp_path)
    kinds = {type(la).__name__ for _, la in kv.gates.gated_layers(regated)}
    assert "VIBAttentionHeads" in kinds


def test_deberta_v3_s_heads_are_cut_and_its_slim_model_reloads(tmp_path):
    """Its disentangled attention derives the head size from hidden_dim /
    num_heads: the slim layers are keras_vib's subclass that takes one,
    which a fresh process loads after `import keras_vib`. Its
    `RelativeEmbedding` builds its layer norm by calling itself: the
    copies are saved so that loading builds it again."""
    rng = np.random.default_rng(4)
    model, x = BACKBONES["DeBERTaV3"](rng)
    gated, slim = half_closed(model, x, rng)
    kinds = [type(layer).__name__ for _, layer in kv.gates.gated_layers(gated)]
    assert kinds == ["VIBAttentionHeads", "VIBGate"] * 2
    heads = [la.num_heads for la in slim.layers if hasattr(la, "attn_head_size")]
    assert heads == [2, 2]
    for saved in (slim, gated):
        saved.save(tmp_path / f"{saved.name}.keras")
    code = (
        "import sys, numpy as np, keras, keras_vib\n"
        "x = {k: np.load(sys.argv[1] + '/' + k + '.npy') for k in sys.argv[2:]}\n"
        f"slim = keras.models.load_model(sys.argv[1] + '/{slim.name}.keras')\n"
        f"gated = keras.models.load_model(sys.argv[1] + '/{gated.name}.keras')\n"
        "d = np.abs(np.asarray(slim(x)) - np.asarray(gated(x, training=False)))\n"
        "assert d.max() < 1e-4, d.max()\n"
    )
    for key, value in x.items():
        np.save(tmp_path / f"{key}.npy", value)
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), *x],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_deit_s_blocks_are_opened(tmp_path):
    """DeiT's encoder blocks return None beside their output (no graph can
    hold it): the encoder is opened by its handler, block by block; its
    heads and feed-forward units are cut, and the slim model saves."""
    rng = np.random.default_rng(5)
    model, x = BACKBONES["DeiT"](rng)
    gated, slim = half_closed(model, x, rng)
    kinds = [type(layer).__name__ for _, layer in kv.gates.gated_layers(gated)]
    assert kinds == ["VIBMultiHeadAttention", "VIBGate"] * 2
    assert slim.count_params() < 0.75 * model.count_params()
    slim.save(tmp_path / "slim.keras")
    loaded = keras.models.load_model(tmp_path / "slim.keras")
    assert_close(loaded(x), slim(x), 1e-6)
