"""Small test helpers, our own (keras.src.testing is private)."""

import json

import keras
import numpy as np


def config_round_trip(layer):
    """Rebuilds `layer` from its JSON-serialised config; returns the copy.

    Asserts that the copy's config equals the original's.
    """
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    return clone


def loss_count(layer_or_model, *inputs, **kwargs):
    """Calls the object eagerly and returns how many losses it added."""
    layer_or_model(*inputs, **kwargs)
    return len(layer_or_model.losses)


def set_gates(gate, mu, log_sigma2):
    """Assigns a gate's variables from numpy arrays."""
    gate.mu.assign(np.asarray(mu, "float32"))
    gate.log_sigma2.assign(np.asarray(log_sigma2, "float32"))


def random_gates(model, rng, closed_fraction=0.5, negative_mu=True):
    """Gives every gate of `model` random mu and a random half closed.

    Returns the list of kept masks, in `gated_layers` order.
    """
    from keras_vib.report import gated_layers

    masks = []
    for _, layer in gated_layers(model):
        gate = getattr(layer, "gate", layer)
        n = gate.units
        mu = rng.uniform(0.5, 1.5, n) * (rng.choice([-1, 1], n) if negative_mu else 1)
        closed = rng.random(n) < closed_fraction
        log_sigma2 = np.where(closed, 6.0, -9.0)
        set_gates(gate, mu, log_sigma2)
        masks.append(~closed)
    return masks
