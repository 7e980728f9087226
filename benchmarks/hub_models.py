"""Small keras-hub backbones built from their constructors (random weights,
no download): what `coverage.py --hub` and the tests run.

`BACKBONES` maps a name to a function returning `(backbone, batch)`: the
backbone of a small config and an input batch for it (a dict, as the
backbone takes it), drawn from `rng`.
"""

import numpy as np

VOCAB = 64
LENGTH = 8


def _text(rng, segments=True, mask=True, n=2, length=LENGTH):
    x = {"token_ids": rng.integers(1, VOCAB, (n, length)).astype("int32")}
    if mask:
        padding = np.ones((n, length), "int32")
        padding[1, -2:] = 0  # a padded example
        x["padding_mask"] = padding
    if segments:
        x["segment_ids"] = (
            (np.arange(length) >= length // 2).astype("int32")[None].repeat(n, 0)
        )
    return x


def _image(rng, size=16, channels=3, n=2):
    return rng.random((n, size, size, channels), "float32")


def _encoder(cls, rng, segments=True, **extra):
    import keras_hub

    model = getattr(keras_hub.models, cls)(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=4,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
        **extra,
    )
    return model, _text(rng, segments=segments)


def _decoder(cls, rng, head_dim=None, **extra):
    import keras_hub

    kwargs = dict(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        **extra,
    )
    if head_dim is not None:
        kwargs["head_dim"] = head_dim
    model = getattr(keras_hub.models, cls)(**kwargs)
    return model, _text(rng, segments=False)


def _vit(cls, rng, **kwargs):
    import keras_hub

    model = getattr(keras_hub.models, cls)(
        image_shape=(16, 16, 3),
        patch_size=4,
        num_layers=2,
        num_heads=4,
        hidden_dim=16,
        **kwargs,
    )
    return model, _image(rng)


BACKBONES = {
    "BERT": lambda rng: _encoder("BertBackbone", rng),
    "RoBERTa": lambda rng: _encoder("RobertaBackbone", rng, segments=False),
    "XLM-RoBERTa": lambda rng: _encoder("XLMRobertaBackbone", rng, segments=False),
    "DistilBERT": lambda rng: _encoder("DistilBertBackbone", rng, segments=False),
    "ALBERT": lambda rng: _encoder(
        "AlbertBackbone", rng, embedding_dim=8, num_groups=1, num_inner_repetitions=1
    ),
    "DeBERTaV3": lambda rng: _encoder("DebertaV3Backbone", rng, segments=False),
    "ELECTRA": lambda rng: (
        __import__("keras_hub").models.ElectraBackbone(
            vocab_size=VOCAB,
            num_layers=2,
            num_heads=4,
            hidden_dim=16,
            embedding_dim=16,
            intermediate_dim=32,
            max_sequence_length=16,
        ),
        _text(rng),
    ),
    "GPT-2": lambda rng: _encoder("GPT2Backbone", rng, segments=False),
    "OPT": lambda rng: _encoder("OPTBackbone", rng, segments=False),
    "Gemma": lambda rng: _decoder("GemmaBackbone", rng, head_dim=4),
    "Gemma3": lambda rng: _decoder(
        "Gemma3Backbone", rng, head_dim=4, image_size=16, vision_encoder=None
    ),
    "Llama": lambda rng: _decoder("LlamaBackbone", rng),
    "Mistral": lambda rng: _decoder("MistralBackbone", rng),
    "Qwen2": lambda rng: _decoder("Qwen2Backbone", rng),
    "Qwen3": lambda rng: _decoder("Qwen3Backbone", rng, head_dim=4),
    "ViT": lambda rng: _vit("ViTBackbone", rng, mlp_dim=32),
    "DeiT": lambda rng: _vit("DeiTBackbone", rng, intermediate_dim=32),
    "DINOv2": lambda rng: _vit("DINOV2Backbone", rng, intermediate_dim=32),
}
