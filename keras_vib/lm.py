"""Text generation from a gated or slim decoder: a keras-hub `CausalLM`.

keras-hub's own causal LMs (`GemmaCausalLM`, `LlamaCausalLM`, ...) need its
`Backbone` classes, whose key/value cache holds the same number of heads in
every layer; a slim decoder has its own count per layer, and is a functional
model. `causal_lm` wraps such a model in a `CausalLM` whose `generate` runs
the whole sequence again for each new token (no cache): the same tokens as
keras-hub's cached generation, at a cost that grows with the square of the
length (fine for checking a compressed model, slow for long texts).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["causal_lm"]

_INPUTS = ("token_ids", "padding_mask")
_CLASS = None


def _check(model, token_embedding):
    inputs = getattr(model, "input", None)
    if not isinstance(model, keras.Model) or not (
        isinstance(inputs, dict) and set(_INPUTS) <= set(inputs)
    ):
        raise ValueError(
            "Expected a decoder model whose inputs are a dict with "
            f"'token_ids' and 'padding_mask' (a keras-hub backbone, gated or "
            f"slim). Received: model={getattr(model, 'name', model)!r} with "
            f"inputs {sorted(inputs) if isinstance(inputs, dict) else inputs!r}"
        )
    names = [layer.name for layer in model.layers]
    if token_embedding not in names:
        raise ValueError(
            "Expected `token_embedding` to name the model's token embedding "
            "(a keras-hub `ReversibleEmbedding`, which gives the logits). "
            f"Received: token_embedding={token_embedding!r}, not a layer of "
            f"{model.name!r}"
        )
    return model.get_layer(token_embedding)


def _causal_lm_class():
    """The `CausalLM` subclass (keras-hub imported on first use)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    try:
        import keras_hub
    except ImportError:
        raise ImportError(
            "keras_vib.causal_lm needs keras-hub: pip install keras_vib[hub]"
        ) from None

    class VIBCausalLM(keras_hub.models.CausalLM):
        """A decoder model with its token embedding's reverse as the head;
        `generate` without a cache."""

        def __init__(self, model, embedding, preprocessor=None, **kwargs):
            inputs = {name: model.input[name] for name in _INPUTS}
            hidden = model(inputs)
            logits = embedding(hidden, reverse=True)
            super().__init__(inputs=inputs, outputs=logits, **kwargs)
            self.preprocessor = preprocessor

        def compile(self, *args, sampler="greedy", **kwargs):
            super().compile(*args, sampler=sampler, **kwargs)

        def generate_step(self, inputs, stop_token_ids=None):
            token_ids = inputs["token_ids"]
            padding_mask = ops.cast(inputs["padding_mask"], "bool")
            lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)

            def next(prompt, cache, index):
                # The whole sequence again: causal attention keeps the
                # positions from `index` on out of the logits at `index - 1`.
                every = ops.ones_like(prompt, dtype="bool")
                logits = self({"token_ids": prompt, "padding_mask": every})
                return ops.take(logits, index - 1, axis=1), None, cache

            token_ids = self.sampler(
                next=next,
                prompt=token_ids,
                index=ops.min(lengths),
                mask=padding_mask,
                stop_token_ids=stop_token_ids,
                model=self,
            )
            if stop_token_ids is None:
                padding_mask = ops.ones_like(token_ids, dtype="bool")
            else:  # up to the first stop token generated, as keras-hub does
                stops = ops.zeros_like(token_ids, dtype="bool")
                for stop in stop_token_ids:
                    stops = ops.logical_or(stops, ops.equal(token_ids, stop))
                new = ops.logical_not(padding_mask)
                stops = ops.cast(ops.logical_and(stops, new), "int32")
                after = ops.cumsum(stops, axis=-1) - stops
                padding_mask = ops.equal(after, 0)
            return {"token_ids": token_ids, "padding_mask": padding_mask}

        def _not_saved(self, *args, **kwargs):
            raise NotImplementedError(
                "A keras_vib causal LM is not saved: save the model it wraps "
                "(`model.save(...)`) and wrap it again after loading."
            )

        save = get_config = _not_saved

    _CLASS = VIBCausalLM
    return _CLASS


def causal_lm(
    model: keras.Model,
    preprocessor=None,
    token_embedding: str = "token_embedding",
):
    """A keras-hub `CausalLM` of a gated or slim decoder, so that `generate`
    works on it.

    The logits are the model's output through its token embedding reversed
    (as keras-hub's Gemma, Llama, Mistral and Qwen causal LMs compute them).
    `generate` runs the whole sequence again for each new token (no
    key/value cache: a slim decoder has its own head count per layer), and
    gives the tokens keras-hub's cached generation gives for the same
    weights. Compiled with the greedy sampler; `compile(sampler=...)` takes
    another.

    Args:
        model: a decoder whose inputs are a dict with `"token_ids"` and
            `"padding_mask"`: a keras-hub backbone, or what `add_gates` or
            `slim_model` made of one.
        preprocessor: optional keras-hub `CausalLMPreprocessor` (the one of
            the task the backbone came from), so that `generate` takes and
            returns text.
        token_embedding: the name of the model's token embedding layer.

    Returns:
        A `keras_hub.models.CausalLM`.

    Example:

    >>> lm = keras_vib.causal_lm(slim)
    >>> lm.generate({"token_ids": ids, "padding_mask": mask},
    ...             max_length=32, stop_token_ids=None)
    """
    embedding = _check(model, token_embedding)
    return _causal_lm_class()(model, embedding, preprocessor)
