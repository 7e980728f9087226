"""Information-bottleneck gates and the VIB layers built on them.

A `VIBGate` multiplies every channel (the last axis) of its input by a
stochastic factor `z_j ~ N(mu_j, sigma_j^2)` during training and by the
deterministic `mu_j` (or 0 once the channel is pruned) at inference. Its KL
term, the variational bound of VIBNet (Dai et al., ICML 2018), is registered
with `add_loss`, so plain `model.fit` trains and prunes.
"""

import keras
import numpy as np
from keras import activations, initializers, ops

from keras_vib import _keras, _validate

__all__ = [
    "VIBGate",
    "VIBDense",
    "VIBConv2D",
    "VIBMultiHeadAttention",
    "VIBGroupQueryAttention",
    "VIBAttentionHeads",
    "SelectFeatures",
    "InputSize",
]

_register = keras.saving.register_keras_serializable(package="keras_vib")
_KL_EPS = 1e-8
# The Dense/Conv arguments the VIB layers pass through to their kernel layer.
_KERNEL_ARGS = (
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_LOG_ALPHA_EPS = 1e-8


def _check_kl_weight(kl_weight):
    return _validate.number("kl_weight", kl_weight, low=0)


def _check_threshold(threshold):
    return _validate.number("threshold", threshold)


def kl_divergence(mu, log_sigma2):
    """Per-channel VIB KL term `0.5 * log(1 + mu^2 / (sigma^2 + 1e-8))`.

    Finite for any finite `log_sigma2` and any `mu`, zero included.

    Args:
        mu: tensor of gate means.
        log_sigma2: tensor of the same shape, log of the gate variances.

    Returns:
        A tensor of the same shape as `mu`.
    """
    sigma2 = ops.exp(log_sigma2) + _KL_EPS
    return 0.5 * ops.log1p(ops.square(mu) / sigma2)


@_register
class VIBGate(keras.layers.Layer):
    """Variational information-bottleneck gate over the last axis (or `axis`).

    Each channel `j` owns two trainable variables, `mu[j]` and
    `log_sigma2[j]`. In training the layer returns `inputs * z` with
    `z_j = mu_j + eps * sigma_j`, `eps ~ N(0, 1)` drawn per example and per
    channel (shared across spatial positions). At inference it returns
    `inputs * mu_j` for channels whose `log_alpha_j = log_sigma2_j -
    log(mu_j^2 + 1e-8)` is below `threshold`, and 0 for the others (the
    pruned channels). Its non-trainable `noise` variable (1) set to 0 makes
    training calls act as inference (no noise, pruned channels off):
    `VIBBudget` does that once the budget is reached.

    The layer adds its KL term with `add_loss`:
    `kl_weight * 0.5 * sum_j log(1 + mu_j^2 / (exp(log_sigma2_j) + 1e-8))`,
    multiplied by the number of spatial positions (the product of the axes
    between the batch and the channel axis) when `kl_spatial_scaling` is
    True, the convention of the authors' code for convolutional feature maps.

    Args:
        kl_weight: float >= 0, the weight of this gate's KL term in the loss.
        threshold: float, the log-alpha threshold above which a channel is
            pruned at inference. Defaults to 0: a channel is pruned once its
            noise variance exceeds its squared mean.
        kl_spatial_scaling: bool. If True, inputs with spatial axes (rank > 2)
            have their KL term multiplied by the number of spatial positions
            (for sizes left open, `keras.Input((None, 8))`, those of each
            batch).
        mu_initializer: initializer of `mu`. Defaults to `N(1, 0.01)`.
        log_sigma2_initializer: initializer of `log_sigma2`. Defaults to
            `N(-9, 0.01)`.
        seed: optional integer seed of the training noise.
        axis: negative int, the axis of the gated units: -1 (channels) by
            default; -2 gates the heads of a `(batch, ..., heads, dim)`
            tensor, each head's `dim` values sharing one factor. The
            positions (`kl_spatial_scaling`) are the axes between the batch
            and `axis`.
        **kwargs: base layer keyword arguments (`name`, `dtype`...).

    Input shape:
        N-D tensor with shape `(batch_size, ..., channels)`, N >= 2 and a
        known number of channels (of units on `axis`).

    Output shape:
        Same shape as the input.

    Example:

    >>> gate = keras_vib.VIBGate(kl_weight=1e-3)
    >>> y = gate(np.ones((2, 8), "float32"))  # inference: y = mu * x
    >>> gate.num_kept()
    8
    """

    def __init__(
        self,
        kl_weight=1e-3,
        threshold=0.0,
        kl_spatial_scaling=True,
        mu_initializer=None,
        log_sigma2_initializer=None,
        seed=None,
        axis=-1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _validate.is_integer(axis) or axis >= 0:
            raise _validate.fail("axis", "a negative int (-1: the last axis)", axis)
        self.axis = int(axis)
        self.kl_weight = _check_kl_weight(kl_weight)
        self.threshold = _check_threshold(threshold)
        self.kl_spatial_scaling = bool(kl_spatial_scaling)
        self.mu_initializer = initializers.get(
            mu_initializer
            if mu_initializer is not None
            else initializers.RandomNormal(mean=1.0, stddev=0.01, seed=seed)
        )
        self.log_sigma2_initializer = initializers.get(
            log_sigma2_initializer
            if log_sigma2_initializer is not None
            else initializers.RandomNormal(mean=-9.0, stddev=0.01, seed=seed)
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.positions = None
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 1 - self.axis:
            raise ValueError(
                f"A VIBGate on axis {self.axis} needs an input of rank >= "
                f"{1 - self.axis} (batch, ..., units). "
                f"Received: input_shape={input_shape}"
            )
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(
                "A VIBGate needs a known channel dimension (the size of its "
                f"axis, {self.axis}) to create its variables. "
                f"Received: input_shape={input_shape}"
            )
        spatial = input_shape[1 : len(input_shape) + self.axis]
        if not (self.kl_spatial_scaling and spatial):
            self.positions = 1
        elif any(d is None for d in spatial):
            self.positions = None  # sizes left open: counted per batch
        else:
            self.positions = int(np.prod(spatial))
        # The gate's variables are float32 and never autocast, whatever the
        # dtype policy (mixed or not): the KL term and log alpha are computed
        # in float32 (float16 would overflow `mu^2 / sigma^2` once log alpha
        # < -11); `call` casts `mu` and `sigma` to the inputs' dtype itself.
        self.mu = self.add_weight(
            name="mu",
            shape=(channels,),
            initializer=self.mu_initializer,
            autocast=False,
            dtype="float32",
        )
        self.log_sigma2 = self.add_weight(
            name="log_sigma2",
            shape=(channels,),
            initializer=self.log_sigma2_initializer,
            autocast=False,
            dtype="float32",
        )
        # Two non-trainable float32 scalars, 1 by default: `kl_scale`
        # multiplies kl_weight (`VIBWarmup` anneals it, `VIBBudget` steers
        # it); `noise` 1: the gates draw their noise in training (the VIB),
        # 0: they act as at inference (`mu`, closed channels off), which
        # `VIBBudget` sets once the budget is reached.
        self.kl_scale, self.noise = (
            self.add_weight(
                name=name,
                shape=(),
                initializer="ones",
                trainable=False,
                autocast=False,
                dtype="float32",
            )
            for name in ("kl_scale", "noise")
        )

    @property
    def units(self):
        """Number of gated channels (the size of the gated axis)."""
        return int(self.mu.shape[0])

    def log_alpha(self):
        """Per-channel `log(sigma^2 / mu^2)` as a tensor."""
        return self.log_sigma2 - ops.log(ops.square(self.mu) + _LOG_ALPHA_EPS)

    def kept_mask(self):
        """Boolean numpy array, True for the channels kept at inference."""
        # In numpy (float32, as `log_alpha`): no backend op to compile per
        # shape on JAX.
        mu = np.asarray(ops.convert_to_numpy(self.mu), "float32")
        log_sigma2 = np.asarray(ops.convert_to_numpy(self.log_sigma2), "float32")
        eps = np.float32(_LOG_ALPHA_EPS)
        return log_sigma2 - np.log(np.square(mu) + eps) < self.threshold

    def num_kept(self):
        """Number of channels kept at inference (an int)."""
        return int(np.sum(self.kept_mask()))

    def kl_loss(self, positions=None):
        """The weighted KL term this gate adds to the loss, as a scalar tensor.

        Args:
            positions: for a gate whose input has sizes left open
                (`positions` None), the number of positions to scale by
                (those of the batch in training); 1 by default.
        """
        kl = ops.sum(kl_divergence(self.mu, self.log_sigma2))
        if self.positions is not None:
            positions = self.positions
        elif positions is None:
            positions = 1.0
        return self.kl_weight * self.kl_scale * positions * kl

    # -- closing and reopening units (what callbacks call) -----------------

    def _set_log_alpha(self, indices, offset):
        """Puts units `indices` at `log alpha = threshold + offset`."""
        indices = _validate.indices("indices", indices, self.units)
        if not len(indices):
            return
        log_sigma2 = np.array(ops.convert_to_numpy(self.log_sigma2), "float32")
        mu2 = np.square(np.asarray(ops.convert_to_numpy(self.mu), "float32"))
        log_mu2 = np.log(mu2[indices] + np.float32(_LOG_ALPHA_EPS))
        log_sigma2[indices] = log_mu2 + np.float32(self.threshold + offset)
        self.log_sigma2.assign(log_sigma2)

    def close(self, indices, margin: float = 1.0) -> None:
        """Closes units: their `log_alpha` goes `margin` nats over `threshold`.

        Args:
            indices: the units to close (ints in `[0, units)`).
            margin: float > 0, how far past the threshold they go.
        """
        margin = _validate.number("margin", margin, low=0, low_open=True)
        self._set_log_alpha(indices, margin)

    def reopen(self, indices, margin: float = 1.0) -> None:
        """Reopens units: their `log_alpha` goes `margin` nats under `threshold`.

        Their `mu` is kept (a unit closed by its `mu` shrinking to 0 stays
        small).

        Args:
            indices: the units to reopen (ints in `[0, units)`).
            margin: float > 0, how far under the threshold they go.
        """
        margin = _validate.number("margin", margin, low=0, low_open=True)
        self._set_log_alpha(indices, -margin)

    def set_kept(self, mask, margin: float = 1.0) -> None:
        """Closes and reopens units so that exactly `mask` is kept.

        Units already on the right side of the threshold are left as they
        are.

        Args:
            mask: boolean array of length `units`, True for the kept units.
            margin: as in `close` and `reopen`.
        """
        mask = np.asarray(mask, bool)
        if mask.shape != (self.units,):
            raise ValueError(
                f"Expected `mask` of shape ({self.units},). "
                f"Received: mask of shape {mask.shape}"
            )
        kept = self.kept_mask()
        self.close(np.flatnonzero(kept & ~mask), margin)
        self.reopen(np.flatnonzero(~kept & mask), margin)

    def freeze(self, margin: float = 5.0) -> None:
        """Fixes which units are kept, for training the pruned network.

        Turns the noise off (training calls act as inference: `mu`, closed
        units off) and moves every unit's `log_alpha` `margin` nats away
        from the threshold (kept units down, closed units up; the order
        within each side unchanged), so that a drift of `mu` flips none.
        `unfreeze` turns the noise back on.

        Args:
            margin: float >= 0, nats added between each unit and the
                threshold.
        """
        margin = _validate.number("margin", margin, low=0)
        kept = self.kept_mask()
        log_sigma2 = np.array(ops.convert_to_numpy(self.log_sigma2), "float32")
        log_sigma2 += np.where(kept, -margin, margin).astype("float32")
        self.log_sigma2.assign(log_sigma2)
        self.noise.assign(0.0)

    def unfreeze(self) -> None:
        """Turns the training noise back on (after `freeze`)."""
        self.noise.assign(1.0)

    @property
    def frozen(self) -> bool:
        """Whether the training noise is off (`freeze`)."""
        return float(ops.convert_to_numpy(self.noise)) == 0.0

    def set_kl_scale(self, value: float) -> None:
        """Sets the factor (>= 0) on `kl_weight` (warm-ups, budgets)."""
        value = _validate.number("value", value, low=0)
        self.kl_scale.assign(value)

    def call(self, inputs, training=None):
        positions = None
        if self.positions is None:  # the positions of this batch
            positions = 1
            rank = len(inputs.shape)
            for size in ops.shape(inputs)[1 : rank + self.axis]:
                positions = positions * size
            positions = ops.cast(positions, "float32")
        self.add_loss(self.kl_loss(positions))
        # Each unit's factor over the axes after `axis` (none by default).
        trailing = (1,) * (-1 - self.axis)

        def per_unit(v):
            return ops.reshape(v, (self.units,) + trailing) if trailing else v

        mu = per_unit(ops.cast(self.mu, inputs.dtype))
        keep = per_unit(ops.cast(self.log_alpha() < self.threshold, inputs.dtype))
        if training:
            sigma = per_unit(ops.cast(ops.exp(0.5 * self.log_sigma2), inputs.dtype))
            rank = len(inputs.shape)
            noise_shape = (
                (ops.shape(inputs)[0],)
                + (1,) * (rank - 1 + self.axis)
                + (self.units,)
                + trailing
            )
            eps = keras.random.normal(
                noise_shape, dtype=inputs.dtype, seed=self.seed_generator
            )
            noise = ops.cast(self.noise, inputs.dtype)
            return inputs * (noise * (mu + eps * sigma) + (1 - noise) * mu * keep)
        return inputs * (mu * keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def load_own_variables(self, store):
        if len(store.keys()) == 3:  # saved before the `noise` variable
            for i, variable in enumerate((self.mu, self.log_sigma2, self.kl_scale)):
                variable.assign(store[str(i)])
            self.noise.assign(1.0)
            return
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kl_weight": self.kl_weight,
                "threshold": self.threshold,
                "kl_spatial_scaling": self.kl_spatial_scaling,
                "mu_initializer": initializers.serialize(self.mu_initializer),
                "log_sigma2_initializer": initializers.serialize(
                    self.log_sigma2_initializer
                ),
                "seed": self.seed,
            }
        )
        if self.axis != -1:
            config["axis"] = self.axis
        return config


class _HasGate:
    """The gate methods a layer holding a `VIBGate` in `self.gate` forwards."""

    @property
    def kl_weight(self):
        return self.gate.kl_weight

    @property
    def threshold(self):
        return self.gate.threshold

    def log_alpha(self):
        """Per-unit `log(sigma^2 / mu^2)` of the gate, as a tensor."""
        return self.gate.log_alpha()

    def kept_mask(self):
        """Boolean numpy array, True for the units kept at inference."""
        return self.gate.kept_mask()

    def num_kept(self):
        """Number of units kept at inference (an int)."""
        return self.gate.num_kept()

    def kl_loss(self):
        """The weighted KL term of the gate, as a scalar tensor."""
        return self.gate.kl_loss()

    def _gate_config(self, seed="seed"):
        gate = self.gate.get_config()
        keys = (
            "kl_weight",
            "threshold",
            "kl_spatial_scaling",
            "mu_initializer",
            "log_sigma2_initializer",
        )
        config = {key: gate[key] for key in keys}
        config[seed] = gate["seed"]
        return config


def _make_gate(
    layer,
    axis,
    kl_weight,
    threshold,
    kl_spatial_scaling,
    mu_initializer,
    log_sigma2_initializer,
    seed,
    name="gate",
):
    return VIBGate(
        kl_weight=kl_weight,
        threshold=threshold,
        kl_spatial_scaling=kl_spatial_scaling,
        mu_initializer=mu_initializer,
        log_sigma2_initializer=log_sigma2_initializer,
        seed=seed,
        axis=axis,
        dtype=layer.dtype_policy,
        name=name,
    )


class _GatedLayer(_HasGate, keras.layers.Layer):
    """Base of the VIB layers: a stock computation followed by a `VIBGate`.

    Holds the gate arguments, creates the gate and forwards its methods.
    """

    def __init__(
        self,
        kl_weight=1e-3,
        threshold=0.0,
        kl_spatial_scaling=True,
        mu_initializer=None,
        log_sigma2_initializer=None,
        seed=None,
        activity_regularizer=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.gate = _make_gate(
            self,
            -1,
            kl_weight,
            threshold,
            kl_spatial_scaling,
            mu_initializer,
            log_sigma2_initializer,
            seed,
        )


@_register
class VIBDense(_GatedLayer):
    """`Dense` followed by its activation and a `VIBGate` on its units.

    Computes `gate(activation(dot(inputs, kernel) + bias))`. The gate
    prunes whole units; `keras_vib.compression_report` counts them and
    `keras_vib.slim_model` removes them.

    Args:
        units: positive integer, the number of output units.
        activation: activation applied before the gate.
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, activity_regularizer, kernel_constraint,
            bias_constraint: as in `keras.layers.Dense`.
        kl_weight, threshold, kl_spatial_scaling, mu_initializer,
            log_sigma2_initializer, seed: the gate's, as in `VIBGate`.
        **kwargs: base layer keyword arguments.

    Example:

    >>> layer = keras_vib.VIBDense(300, activation="relu", kl_weight=1e-3)
    >>> y = layer(np.ones((2, 784), "float32"))
    >>> y.shape
    (2, 300)
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        units = _validate.integer("units", units, minimum=1)
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.dense = keras.layers.Dense(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dtype=self.dtype_policy,
            name="dense",
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.gate.build(self.dense.compute_output_shape(input_shape))

    @property
    def kernel(self):
        return self.dense.kernel

    @property
    def bias(self):
        return self.dense.bias

    def call(self, inputs, training=None):
        return self.gate(self.dense(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return self.dense.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        dense = self.dense.get_config()
        for key in ("units", "activation") + _KERNEL_ARGS:
            config[key] = dense[key]
        config.update(self._gate_config())
        return config


@_register
class VIBConv2D(_GatedLayer):
    """`Conv2D`, optional `BatchNormalization`, activation, then a `VIBGate`.

    Computes `gate(activation(bn(conv(inputs))))` on channels-last inputs;
    the gate prunes whole output channels (its noise is shared over the
    spatial positions of a channel).

    Args:
        filters: positive integer, the number of output channels.
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints. Defaults to 1.
        padding: `"valid"` or `"same"`.
        activation: activation applied after the (optional) batch norm.
        batch_norm: bool, whether a `BatchNormalization` follows the conv.
        batch_norm_momentum, batch_norm_epsilon: of the batch norm.
        dilation_rate, groups, use_bias, kernel_initializer,
            bias_initializer, kernel_regularizer, bias_regularizer,
            activity_regularizer, kernel_constraint, bias_constraint: as in
            `keras.layers.Conv2D`.
        kl_weight, threshold, kl_spatial_scaling, mu_initializer,
            log_sigma2_initializer, seed: the gate's, as in `VIBGate`.
        **kwargs: base layer keyword arguments.

    Example:

    >>> layer = keras_vib.VIBConv2D(20, 5, activation="relu")
    >>> y = layer(np.ones((2, 28, 28, 1), "float32"))
    >>> y.shape
    (2, 24, 24, 20)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        activation=None,
        batch_norm=False,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        dilation_rate=(1, 1),
        groups=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        filters = _validate.integer("filters", filters, minimum=1)
        super().__init__(**kwargs)
        self.filters = filters
        self.batch_norm = bool(batch_norm)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.batch_norm_epsilon = float(batch_norm_epsilon)
        self.activation = activations.get(activation)
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=None if self.batch_norm else activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            data_format="channels_last",
            dtype=self.dtype_policy,
            name="conv",
        )
        self.bn = None
        if self.batch_norm:
            self.bn = keras.layers.BatchNormalization(
                momentum=self.batch_norm_momentum,
                epsilon=self.batch_norm_epsilon,
                dtype=self.dtype_policy,
                name="batch_norm",
            )

    def build(self, input_shape):
        self.conv.build(input_shape)
        output_shape = self.conv.compute_output_shape(input_shape)
        if self.bn is not None:
            self.bn.build(output_shape)
        self.gate.build(output_shape)

    @property
    def kernel(self):
        return self.conv.kernel

    @property
    def bias(self):
        return self.conv.bias

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.bn is not None:
            x = self.activation(self.bn(x, training=training))
        return self.gate(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        conv = self.conv.get_config()
        conv_keys = ("filters", "kernel_size", "strides", "padding", "dilation_rate")
        for key in conv_keys + ("groups",) + _KERNEL_ARGS:
            config[key] = conv[key]
        config["activation"] = activations.serialize(self.activation)
        config["batch_norm"] = self.batch_norm
        config["batch_norm_momentum"] = self.batch_norm_momentum
        config["batch_norm_epsilon"] = self.batch_norm_epsilon
        config.update(self._gate_config())
        return config


_GATE_ARGS = """kl_weight, threshold, kl_spatial_scaling, mu_initializer,
            log_sigma2_initializer: of the head gate, as in `VIBGate`
            (the KL term of a head is scaled by the number of value
            positions when `kl_spatial_scaling`).
        gate_seed: the seed of the gate's noise (`seed` is the
            attention's own, of its dropout)."""


class _HeadGated(_HasGate):
    """An attention layer whose values pass its head gate (`scale_values`)."""

    def _add_head_gate(self, axis, *args):
        self.gate = _make_gate(self, axis, *args, name="head_gate")

    def scale_values(self, value, training=None):
        return self.gate(value, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(self._gate_config(seed="gate_seed"))
        return config


@_register
class VIBMultiHeadAttention(_HeadGated, _keras.ValueScaledAttention):
    """`MultiHeadAttention` with a `VIBGate` on its heads.

    Each head's values are multiplied by the head's factor `z_h` (drawn in
    training, `mu_h` or 0 at inference) before they are attended to, which
    multiplies that head's output by `z_h`: a closed head contributes
    nothing, and `keras_vib.slim_model` removes it (the slim model has a
    stock `MultiHeadAttention` with fewer heads). `keras_vib.add_gates`
    puts one in the place of each `MultiHeadAttention` of a model.

    Args:
        num_heads, key_dim, **kwargs: as in `keras.layers.MultiHeadAttention`.
        {gate}

    Example:

    >>> layer = keras_vib.VIBMultiHeadAttention(num_heads=4, key_dim=8)
    >>> y = layer(np.ones((2, 5, 16), "float32"), np.ones((2, 5, 16), "float32"))
    >>> layer.num_kept()
    4
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        kl_weight=1e-3,
        threshold=0.0,
        kl_spatial_scaling=True,
        mu_initializer=None,
        log_sigma2_initializer=None,
        gate_seed=None,
        **kwargs,
    ):
        super().__init__(num_heads, key_dim, **kwargs)
        self._add_head_gate(
            -2,
            kl_weight,
            threshold,
            kl_spatial_scaling,
            mu_initializer,
            log_sigma2_initializer,
            gate_seed,
        )

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self.gate.build(tuple(value_shape[:-1]) + (self.num_heads, self.value_dim))


@_register
class VIBGroupQueryAttention(_HeadGated, _keras.ValueScaledGroupAttention):
    """`GroupQueryAttention` with a `VIBGate` on its key/value heads.

    The unit is a key/value head with its query heads (all
    `num_query_heads // num_key_value_heads` of them): its values are
    multiplied by its factor before they are attended to, so a closed unit
    contributes nothing, and `keras_vib.slim_model` removes the key/value
    head and its query heads (the slim layer keeps the same number of
    query heads per key/value head).

    Args:
        head_dim, num_query_heads, num_key_value_heads, **kwargs: as in
            `keras.layers.GroupQueryAttention`.
        {gate}
    """

    def __init__(
        self,
        head_dim,
        num_query_heads,
        num_key_value_heads,
        kl_weight=1e-3,
        threshold=0.0,
        kl_spatial_scaling=True,
        mu_initializer=None,
        log_sigma2_initializer=None,
        gate_seed=None,
        **kwargs,
    ):
        super().__init__(head_dim, num_query_heads, num_key_value_heads, **kwargs)
        self._add_head_gate(
            -3,
            kl_weight,
            threshold,
            kl_spatial_scaling,
            mu_initializer,
            log_sigma2_initializer,
            gate_seed,
        )

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        heads = (self.num_key_value_heads, self.num_repeats, self.head_dim)
        self.gate.build(tuple(value_shape[:-1]) + heads)


@_register
class VIBAttentionHeads(_HeadGated, keras.layers.Layer):
    """Another library's attention layer with a `VIBGate` on its key/value
    heads (keras-hub's rotary attention of Mistral, Qwen3, Gemma..., its
    DeBERTaV3 attention).

    The wrapped `layer` computes as before, its values (each key/value head
    with its query heads) multiplied by the head's factor before they are
    attended to, through the layer's `_compute_attention(query, key, value,
    ...)` hook. `keras_vib.add_gates` puts one in the place of each such
    layer it has a handler for; the slim model has the library's layer
    with fewer heads.

    Args:
        layer: the attention layer (built, with its weights), or its
            serialized config.
        {gate}
    """

    def __init__(
        self,
        layer,
        kl_weight=1e-3,
        threshold=0.0,
        kl_spatial_scaling=True,
        mu_initializer=None,
        log_sigma2_initializer=None,
        gate_seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not isinstance(layer, keras.layers.Layer) or not (
            _keras.has_attention_hook(layer)
        ):
            raise ValueError(
                "Expected an attention layer with a `_compute_attention` "
                f"method. Received: layer={layer!r}"
            )
        self.layer = layer
        heads = _keras.attribute(layer, "num_key_value_heads")
        self.heads = int(heads or _keras.attribute(layer, "num_heads"))
        self._add_head_gate(
            -3,
            kl_weight,
            threshold,
            kl_spatial_scaling,
            mu_initializer,
            log_sigma2_initializer,
            gate_seed,
        )

    def build(self, *args, **kwargs):
        # Positions per batch (the length is open); one factor per head.
        self.gate.build((None, None, self.heads, 1, 1))

    def _scale(self, value, training):
        """`value` (batch, length, heads, head_dim), its heads the
        key/value heads or their query heads (repeated), through the gate."""
        shape = ops.shape(value)
        grouped = ops.reshape(
            value,
            (shape[0], shape[1], self.heads, value.shape[2] // self.heads, shape[3]),
        )
        return ops.reshape(self.gate(grouped, training=training), shape)

    def call(self, *args, training=None, **kwargs):
        def scale(value):
            return self._scale(value, training)

        with _keras.values_scaled(self.layer, scale):
            return self.layer(*args, training=training, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        if not self.layer.built:  # reloaded: built on the hidden states
            first = [a for a in (*args, *kwargs.values()) if hasattr(a, "shape")]
            self.layer.build(tuple(first[0].shape))
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return config


VIBAttentionHeads.__doc__ = VIBAttentionHeads.__doc__.replace("{gate}", _GATE_ARGS)
VIBMultiHeadAttention.__doc__ = VIBMultiHeadAttention.__doc__.replace(
    "{gate}", _GATE_ARGS
)
VIBGroupQueryAttention.__doc__ = VIBGroupQueryAttention.__doc__.replace(
    "{gate}", _GATE_ARGS
)


@_register
class SelectFeatures(keras.layers.Layer):
    """Keeps the given indices of the last axis (an input gate's survivors).

    Args:
        indices: list of ints, the kept indices of the last axis.
        **kwargs: base layer keyword arguments.

    Example:

    >>> layer = keras_vib.layers.SelectFeatures([0, 2])
    >>> layer(np.array([[1.0, 2.0, 3.0]])).shape
    (1, 2)
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        if not self.indices:
            raise ValueError(
                "Expected `indices` to hold at least one index. "
                f"Received: indices={indices!r}"
            )

    def call(self, inputs):
        return keras.ops.take(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        config = super().get_config()
        config["indices"] = list(self.indices)
        return config


@_register
class InputSize(keras.layers.Layer):
    """Passes its input on; while training, records the size of its examples.

    `add_gates` puts one after each model input whose sizes are left open
    (`keras.Input((None,))`), so that after (or during) `fit` the FLOPs can
    be counted at the size of the data it trained on (`recorded()`): the
    reference size when none is given. `slim_model` leaves it out.

    Args:
        **kwargs: base layer keyword arguments.

    Example:

    >>> size = keras_vib.layers.InputSize()
    >>> _ = size(np.zeros((2, 7), "int32"), training=True)
    >>> size.recorded()
    (7,)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.size = self.add_weight(
            shape=(len(input_shape) - 1,),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="size",
        )

    def call(self, inputs, training=None):
        if training and len(inputs.shape) > 1:
            shape = ops.shape(inputs)
            self.size.assign(ops.stack([ops.cast(d, "int32") for d in shape[1:]]))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def recorded(self):
        """The shape of one example (no batch axis) of the last training
        batch, a tuple of ints; None before any training step."""
        size = tuple(int(d) for d in ops.convert_to_numpy(self.size))
        return size if size and all(d > 0 for d in size) else None
