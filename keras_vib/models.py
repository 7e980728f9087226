"""The networks of the VIBNet paper, gated or plain.

Every builder takes `vib=True/False`: with `vib=True` it returns the network
with its neurons and channels behind VIB gates (`VIBGate`, `VIBDense`,
`VIBConv2D`), ready for `model.fit`, `compression_report` and `slim_model`;
with `vib=False` the same architecture made of stock Keras layers only (the
uncompressed baseline), with the same layer names where a layer exists in
both.

All models return logits (no softmax): compile them with
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence

import keras

from keras_vib import _validate
from keras_vib.layers import VIBConv2D, VIBDense, VIBGate, _check_kl_weight

__all__ = [
    "LENET5_KL_MULTIPLIERS",
    "MODELS",
    "VGG16_CONFIG",
    "VGG16_FC_KL_MULTIPLIER",
    "get_model",
    "lenet5_caffe",
    "lenet_300_100",
    "vgg16",
    "vgg16_kl_multipliers",
    "vit",
]

# The modified VGG16 of the paper for 32x32 images, as in the authors' code:
# (filters, KL multiplier) per 3x3 conv, "M" for a 2x2 max-pool. The
# multiplier halves from block to block toward the input: 1/32 in block 1
# up to 1/2 in block 5.
VGG16_CONFIG: tuple = (
    (64, 1 / 32),
    (64, 1 / 32),
    "M",
    (128, 1 / 16),
    (128, 1 / 16),
    "M",
    (256, 1 / 8),
    (256, 1 / 8),
    (256, 1 / 8),
    "M",
    (512, 1 / 4),
    (512, 1 / 4),
    (512, 1 / 4),
    "M",
    (512, 1 / 2),
    (512, 1 / 2),
    (512, 1 / 2),
    "M",
)
# KL multiplier of the two gated 512-unit fully connected layers of `vgg16`
# (the authors' code leaves them at 1).
VGG16_FC_KL_MULTIPLIER = 1.0
_VGG16_FC_UNITS = (512, 512)


# Per-layer KL multipliers of `lenet5_caffe` (conv1, conv2, fc1), from the
# MNIST tuning runs of `keras-vib train --model lenet5`. A conv gate's KL
# term is already multiplied by its number of positions (576 and 64), so
# with equal multipliers the 500 dense units would hardly be pruned, while
# they hold almost all of the weights.
LENET5_KL_MULTIPLIERS = (1.0, 4.0, 100.0)


def _check_input_shape(input_shape, rank=None):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or not shape
        or any(not _validate.is_integer(d) or d <= 0 for d in shape)
        or (rank is not None and len(shape) != rank)
    ):
        what = f"{rank} positive integers" if rank else "positive integers"
        raise ValueError(
            f"Expected `input_shape` to be a tuple of {what}. "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _check_width(width):
    return _validate.number("width", width, low=0, low_open=True)


def _scaled(units, width):
    return max(1, int(round(units * width)))


def lenet_300_100(
    vib: bool = True,
    kl_weight: float = 2e-4,
    input_gate: bool = True,
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28, 1),
    name: str | None = None,
) -> keras.Sequential:
    """LeNet-300-100: two hidden dense layers, 300 and 100 ReLU units.

    Layers: `Flatten` (`"flatten"`), a `VIBGate` on the flattened input
    (`"input_gate"`, with `vib=True` and `input_gate=True`),
    `VIBDense(300, "relu")` (`"fc1"`), `VIBDense(100, "relu")` (`"fc2"`) and
    a `Dense(num_classes)` classifier (`"classifier"`, logits, not gated).
    With the input gate on 28x28x1 images the gated neurons number
    784 + 300 + 100 = 1184, the paper's r_N denominator; the kernel weights
    number 784 * 300 + 300 * 100 + 100 * 10 = 266,200.

    Args:
        vib: bool. True for the gated network, False for the plain baseline
            (`Flatten`, `Dense` layers only, no input gate).
        kl_weight: float >= 0, the KL weight of every gate. The default,
            2e-4, suits a batch size of about 100 with Adam at 1e-3 (the
            KL terms are added to the mean cross-entropy of a batch).
            Ignored when `vib=False`.
        input_gate: bool, whether to gate the flattened input pixels (the
            paper does). Ignored when `vib=False`.
        num_classes: positive int, the number of logits.
        input_shape: shape of one example, without the batch axis; it is
            flattened.
        name: name of the model. Defaults to `"lenet_300_100"`, or
            `"lenet_300_100_baseline"` when `vib=False`.

    Returns:
        A built `keras.Sequential`.

    Example:

    >>> model = keras_vib.models.lenet_300_100(kl_weight=2e-4)
    >>> model.compile(
    ...     "adam",
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     metrics=["accuracy"],
    ... )
    >>> keras_vib.compression_report(model).total_neurons
    1184
    """
    vib = _validate.boolean("vib", vib)
    input_gate = _validate.boolean("input_gate", input_gate)
    kl_weight = _check_kl_weight(kl_weight)
    num_classes = _validate.integer("num_classes", num_classes, minimum=1)
    input_shape = _check_input_shape(input_shape)
    layers = [
        keras.Input(input_shape, name="image"),
        keras.layers.Flatten(name="flatten"),
    ]
    if vib:
        if input_gate:
            layers.append(VIBGate(kl_weight=kl_weight, name="input_gate"))
        layers += [
            VIBDense(300, activation="relu", kl_weight=kl_weight, name="fc1"),
            VIBDense(100, activation="relu", kl_weight=kl_weight, name="fc2"),
        ]
    else:
        layers += [
            keras.layers.Dense(300, activation="relu", name="fc1"),
            keras.layers.Dense(100, activation="relu", name="fc2"),
        ]
    layers.append(keras.layers.Dense(num_classes, name="classifier"))
    default = "lenet_300_100" if vib else "lenet_300_100_baseline"
    return keras.Sequential(layers, name=name or default)


def lenet5_caffe(
    vib: bool = True,
    kl_weight: float = 2e-5,
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28, 1),
    kl_multipliers: Sequence[float] = LENET5_KL_MULTIPLIERS,
    name: str | None = None,
) -> keras.Sequential:
    """LeNet-5-Caffe: two 5x5 convolutions, a 500-unit dense layer.

    Layers: `VIBConv2D(20, 5, "valid", "relu")` (`"conv1"`),
    `MaxPooling2D(2)` (`"pool1"`), `VIBConv2D(50, 5, "valid", "relu")`
    (`"conv2"`), `MaxPooling2D(2)` (`"pool2"`), `Flatten` (`"flatten"`),
    `VIBDense(500, "relu")` (`"fc1"`), `Dense(num_classes)` (`"classifier"`,
    logits, not gated). The conv channels and the 500 units are gated, the
    input is not (as in the paper): 20 + 50 + 500 = 570 gated neurons. On
    28x28x1 images the kernel weights number 25 * 20 + 25 * 20 * 50 +
    800 * 500 + 500 * 10 = 430,500.

    Args:
        vib: bool. True for the gated network, False for the plain baseline
            (`Conv2D`, `MaxPooling2D`, `Flatten`, `Dense`).
        kl_weight: float >= 0, the base KL weight: gate `i` gets
            `kl_weight * kl_multipliers[i]`. Ignored when `vib=False`.
        num_classes: positive int, the number of logits.
        input_shape: `(height, width, channels)` of one example, at least
            16x16.
        kl_multipliers: three numbers >= 0, the KL multipliers of conv1,
            conv2 and fc1. A conv gate's KL term is also multiplied by the
            number of positions of its feature map (576 for conv1, 64 for
            conv2 on 28x28 inputs); the default, `LENET5_KL_MULTIPLIERS` =
            (1, 4, 100), comes from our MNIST tuning runs: with equal
            multipliers fc1, which holds 93% of the weights, would hardly
            be pruned. Ignored when `vib=False`.
        name: name of the model. Defaults to `"lenet5_caffe"`, or
            `"lenet5_caffe_baseline"` when `vib=False`.

    Returns:
        A built `keras.Sequential`.

    Example:

    >>> model = keras_vib.models.lenet5_caffe()
    >>> model.output_shape
    (None, 10)
    """
    vib = _validate.boolean("vib", vib)
    kl_weight = _check_kl_weight(kl_weight)
    num_classes = _validate.integer("num_classes", num_classes, minimum=1)
    input_shape = _check_input_shape(input_shape, rank=3)
    multipliers = _check_multipliers(kl_multipliers, 3, "conv1, conv2, fc1")
    if min(input_shape[:2]) < 16:
        raise ValueError(
            "lenet5_caffe needs inputs of at least 16x16 (two valid 5x5 "
            f"convolutions and two 2x2 pools). Received: input_shape={input_shape}"
        )

    def conv(filters, layer_name, multiplier):
        if vib:
            return VIBConv2D(
                filters,
                5,
                activation="relu",
                kl_weight=kl_weight * multiplier,
                name=layer_name,
            )
        return keras.layers.Conv2D(filters, 5, activation="relu", name=layer_name)

    dense = VIBDense if vib else keras.layers.Dense
    extra = {"kl_weight": kl_weight * multipliers[2]} if vib else {}
    layers = [
        keras.Input(input_shape, name="image"),
        conv(20, "conv1", multipliers[0]),
        keras.layers.MaxPooling2D(2, name="pool1"),
        conv(50, "conv2", multipliers[1]),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        dense(500, activation="relu", name="fc1", **extra),
        keras.layers.Dense(num_classes, name="classifier"),
    ]
    default = "lenet5_caffe" if vib else "lenet5_caffe_baseline"
    return keras.Sequential(layers, name=name or default)


def vgg16_kl_multipliers() -> list[float]:
    """The default per-layer KL multipliers of `vgg16`, input first.

    Returns:
        A list of 15 floats: one per conv layer (13, block by block: 1/32,
        1/32, 1/16, 1/16, 1/8 x3, 1/4 x3, 1/2 x3) then one per gated fully
        connected layer (2, `VGG16_FC_KL_MULTIPLIER` = 1 each).
    """
    convs = [mult for item in VGG16_CONFIG if item != "M" for mult in item[1:]]
    return convs + [VGG16_FC_KL_MULTIPLIER] * len(_VGG16_FC_UNITS)


def _check_multipliers(kl_multipliers, count, layout):
    try:
        values = list(kl_multipliers)
    except TypeError:
        values = None
    if values is None or len(values) != count:
        raise ValueError(
            f"Expected `kl_multipliers` to be a sequence of {count} numbers "
            f"({layout}). "
            f"Received: kl_multipliers={kl_multipliers!r}"
        )
    for value in values:
        if not _validate.is_real(value) or value < 0:
            raise ValueError(
                "Expected every entry of `kl_multipliers` to be a finite number "
                f">= 0. Received: kl_multipliers={kl_multipliers!r}"
            )
    return [float(v) for v in values]


def vgg16(
    vib: bool = True,
    num_classes: int = 10,
    kl_weight: float = 1e-5,
    input_shape: Sequence[int] = (32, 32, 3),
    width: float = 1.0,
    kl_multipliers: Sequence[float] | None = None,
    name: str | None = None,
) -> keras.Sequential:
    """The paper's modified VGG16 for CIFAR-10/100 (32x32 images).

    Thirteen 3x3 `"same"` convolutions, each followed by batch norm and
    ReLU, in five blocks of 64, 64 | 128, 128 | 256, 256, 256 | 512, 512,
    512 | 512, 512, 512 channels, a 2x2 max-pool after each block (32x32 ->
    1x1), then `Flatten`, two 512-unit ReLU dense layers and a
    `Dense(num_classes)` classifier (logits, not gated).

    With `vib=True` each conv is a `VIBConv2D(batch_norm=True)`
    (`"block{b}_conv{i}"`: conv, BN, ReLU, gate) and each hidden dense
    layer a `VIBDense` (`"fc1"`, `"fc2"`). Each gate's KL weight is
    `kl_weight * multiplier`, with the multipliers of the authors' code
    (`vgg16_kl_multipliers()`), halving block by block toward the input:

    | layers | multiplier |
    |---|---|
    | block1_conv1-2 | 1/32 |
    | block2_conv1-2 | 1/16 |
    | block3_conv1-3 | 1/8 |
    | block4_conv1-3 | 1/4 |
    | block5_conv1-3 | 1/2 |
    | fc1, fc2 | 1 |

    The early layers see large feature maps, and a conv gate's KL term is
    multiplied by its number of positions (1024 in block 1, 4 in block 5),
    so they still get the most pressure per channel.

    With `vib=False` each conv is a stock `Conv2D` (`"block{b}_conv{i}"`),
    `BatchNormalization` (`"block{b}_bn{i}"`) and `ReLU`
    (`"block{b}_relu{i}"`), and the dense layers are stock `Dense`.

    Args:
        vib: bool. True for the gated network, False for the plain baseline.
        num_classes: positive int, the number of logits (10 for CIFAR-10,
            100 for CIFAR-100).
        kl_weight: float >= 0, the base KL weight ("kl_factor" of the
            paper). The authors use 1e-5 to 3e-5 with Adam at 1e-3; the
            default is 1e-5. Ignored when `vib=False`.
        input_shape: `(height, width, channels)` of one example, at least
            32x32 (five 2x2 pools).
        width: float > 0, multiplies every channel and unit count (rounded,
            at least 1): 1.0 is the paper's net (about 15M kernel weights),
            a small width gives a quick net for tests.
        kl_multipliers: optional sequence of 15 numbers >= 0 that replaces
            the default multipliers (13 convs, input first, then fc1, fc2).
        name: name of the model. Defaults to `"vgg16"`, or
            `"vgg16_baseline"` when `vib=False`.

    Returns:
        A built `keras.Sequential`.

    Example:

    >>> model = keras_vib.models.vgg16(num_classes=10, kl_weight=1e-5)
    >>> model.get_layer("block1_conv1").kl_weight  # 1e-5 / 32
    3.125e-07
    """
    vib = _validate.boolean("vib", vib)
    num_classes = _validate.integer("num_classes", num_classes, minimum=1)
    kl_weight = _check_kl_weight(kl_weight)
    input_shape = _check_input_shape(input_shape, rank=3)
    width = _check_width(width)
    pools = sum(item == "M" for item in VGG16_CONFIG)
    if min(input_shape[:2]) < 2**pools:
        raise ValueError(
            f"vgg16 needs inputs of at least {2**pools}x{2**pools} ({pools} "
            f"2x2 max-pools). Received: input_shape={input_shape}"
        )
    convs = [item for item in VGG16_CONFIG if item != "M"]
    if kl_multipliers is None:
        multipliers = vgg16_kl_multipliers()
    else:
        multipliers = _check_multipliers(
            kl_multipliers, len(convs) + 2, "13 conv layers, then 2 dense layers"
        )

    layers = [keras.Input(input_shape, name="image")]
    block, index, conv_index = 1, 1, 0
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(keras.layers.MaxPooling2D(2, name=f"block{block}_pool"))
            block, index = block + 1, 1
            continue
        filters = _scaled(item[0], width)
        conv_name = f"block{block}_conv{index}"
        if vib:
            layers.append(
                VIBConv2D(
                    filters,
                    3,
                    padding="same",
                    activation="relu",
                    batch_norm=True,
                    kl_weight=kl_weight * multipliers[conv_index],
                    name=conv_name,
                )
            )
        else:
            layers += [
                keras.layers.Conv2D(filters, 3, padding="same", name=conv_name),
                keras.layers.BatchNormalization(name=f"block{block}_bn{index}"),
                keras.layers.ReLU(name=f"block{block}_relu{index}"),
            ]
        index += 1
        conv_index += 1
    layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(_VGG16_FC_UNITS):
        units = _scaled(units, width)
        if vib:
            mult = multipliers[len(convs) + i]
            layers.append(
                VIBDense(
                    units,
                    activation="relu",
                    kl_weight=kl_weight * mult,
                    name=f"fc{i + 1}",
                )
            )
        else:
            layers.append(
                keras.layers.Dense(units, activation="relu", name=f"fc{i + 1}")
            )
    layers.append(keras.layers.Dense(num_classes, name="classifier"))
    default = "vgg16" if vib else "vgg16_baseline"
    return keras.Sequential(layers, name=name or default)


def vit(
    vib: bool = True,
    kl_weight: float = 1e-4,
    num_classes: int = 10,
    input_shape: Sequence[int] = (28, 28, 1),
    patch_size: int = 7,
    width: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    mlp_units: int = 128,
    name: str | None = None,
) -> keras.Model:
    """A small Vision Transformer of stock Keras layers.

    Patches by a strided `Conv2D` (`"patches"`), a 3x3 depthwise conv added
    to them as the position encoding (`"position"`, CPVT's), `depth`
    pre-norm blocks (`"block{i}_attention"`: `MultiHeadAttention` of
    `num_heads` heads of `width // num_heads`; `"block{i}_mlp1"` (gelu,
    `mlp_units`) and `"block{i}_mlp2"`), a `LayerNormalization`, average
    pooling over the patches and a `Dense(num_classes)` classifier. With
    `vib=True`, `keras_vib.add_gates` gates its heads
    (`VIBMultiHeadAttention`) and its MLP units; the residual stream stays
    whole.

    Args:
        vib: bool, the gated network (True) or the plain one.
        kl_weight: float >= 0, the KL weight of every gate (`vib=True`).
        num_classes: positive int, the number of logits.
        input_shape: `(height, width, channels)`, sides divisible by
            `patch_size`.
        patch_size, width, depth, num_heads, mlp_units: positive ints.
        name: the model's name (`"vit"`, or `"vit_baseline"` with
            `vib=False`).

    Returns:
        A built functional `keras.Model`.

    Example:

    >>> model = keras_vib.models.vit(vib=True, depth=2)
    >>> [n for n, _ in keras_vib.gates.gates(model)][:2]
    ['block0_attention', 'block0_mlp1_gate']
    """
    vib = _validate.boolean("vib", vib)
    kl_weight = _check_kl_weight(kl_weight)
    num_classes = _validate.integer("num_classes", num_classes, minimum=1)
    input_shape = _check_input_shape(input_shape, rank=3)
    patch_size = _validate.integer("patch_size", patch_size, minimum=1)
    width = _validate.integer("width", width, minimum=1)
    depth = _validate.integer("depth", depth, minimum=1)
    num_heads = _validate.integer("num_heads", num_heads, minimum=1)
    mlp_units = _validate.integer("mlp_units", mlp_units, minimum=1)
    if input_shape[0] % patch_size or input_shape[1] % patch_size:
        raise ValueError(
            "Expected the sides of `input_shape` to be multiples of "
            f"`patch_size`={patch_size}. Received: input_shape={input_shape}"
        )
    if width % num_heads:
        raise ValueError(
            f"Expected `width` to be a multiple of `num_heads`={num_heads}. "
            f"Received: width={width}"
        )
    L = keras.layers
    images = keras.Input(input_shape, name="image")
    x = L.Conv2D(width, patch_size, strides=patch_size, name="patches")(images)
    x = L.Add(name="position_add")(
        [x, L.DepthwiseConv2D(3, padding="same", name="position")(x)]
    )
    patches = (input_shape[0] // patch_size) * (input_shape[1] // patch_size)
    x = L.Reshape((patches, width), name="tokens")(x)
    for i in range(depth):
        h = L.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = L.MultiHeadAttention(
            num_heads, width // num_heads, name=f"block{i}_attention"
        )(h, h)
        x = L.Add(name=f"block{i}_add1")([x, h])
        h = L.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = L.Dense(mlp_units, activation="gelu", name=f"block{i}_mlp1")(h)
        h = L.Dense(width, name=f"block{i}_mlp2")(h)
        x = L.Add(name=f"block{i}_add2")([x, h])
    x = L.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    outputs = L.Dense(num_classes, name="classifier")(x)
    plain = keras.Model(images, outputs, name="vit_baseline")
    if not vib:
        return plain if name is None else keras.Model(images, outputs, name=name)
    from keras_vib.gating import add_gates

    with warnings.catch_warnings():
        # The residual stream feeds the norms: left whole, as designed.
        warnings.filterwarnings("ignore", "add_gates: .* left ungated")
        gated = add_gates(plain, kl_weight=kl_weight)
    return keras.Model(gated.inputs, gated.outputs, name=name or "vit")


# The model zoo of `get_model`: name -> builder.
MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet300": lenet_300_100,
    "lenet5": lenet5_caffe,
    "vgg16": vgg16,
    "vit": vit,
}


def get_model(name: str, /, **kwargs) -> keras.Model:
    """Builds a model of the zoo by name.

    Args:
        name: one of `"lenet300"` (`lenet_300_100`), `"lenet5"`
            (`lenet5_caffe`), `"vgg16"` (`vgg16`) or `"vit"` (`vit`).
        **kwargs: passed to the builder (`vib`, `kl_weight`,
            `num_classes`, `name`...).

    Returns:
        The Keras model.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones),
            an argument the builder does not take (the message lists those
            it takes) or a bad value.

    Example:

    >>> model = keras_vib.models.get_model("lenet5", vib=False)
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(
            f"Unknown model name: name={name!r}. "
            f"Expected one of: {', '.join(repr(n) for n in MODELS)}."
        )
    builder = MODELS[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) for model {name!r}: {', '.join(unknown)}. "
            f"`{builder.__name__}` accepts: {', '.join(accepted)}."
        )
    return builder(**kwargs)
