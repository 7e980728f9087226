"""Argument checks, in Keras's words: "Expected X. Received: name=value".

Every public function checks its arguments here, so that a bool is never
taken for a number (`True` is an `int` to Python), a NaN never for a
number, and every message has the same form.
"""

import inspect
import math
import warnings

import numpy as np

_INTEGERS = (int, np.integer)
_REALS = (int, float, np.integer, np.floating)


def fail(name, expected, value):
    """The `ValueError` for argument `name`: `expected` says what it must be."""
    return ValueError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")


def is_integer(value):
    """An int (numpy's too), not a bool."""
    return isinstance(value, _INTEGERS) and not isinstance(value, (bool, np.bool_))


def is_real(value):
    """A finite int or float (numpy's too), not a bool."""
    return (
        isinstance(value, _REALS)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def boolean(name, value, optional=False):
    """`value` as a bool; None too when `optional`."""
    if optional and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, "a bool or None" if optional else "a bool", value)
    return bool(value)


def integer(name, value, minimum=None, optional=False):
    """`value` as an int >= `minimum`; None too when `optional`."""
    if optional and value is None:
        return None
    if not is_integer(value) or (minimum is not None and value < minimum):
        if minimum == 1:
            expected = "a positive integer"
        elif minimum is not None:
            expected = f"an integer >= {minimum}"
        else:
            expected = "an integer"
        raise fail(name, expected + (" or None" if optional else ""), value)
    return int(value)


def _interval(low, high, low_open, high_open):
    if low is not None and high is not None:
        return (
            f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def number(
    name, value, low=None, high=None, low_open=False, high_open=False, optional=False
):
    """`value` as a finite float within the bounds (`low < value` where
    `low_open`, else `low <= value`; likewise `high`); None too when
    `optional`."""
    if optional and value is None:
        return None
    ok = is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        interval = _interval(low, high, low_open, high_open)
        expected = "a finite number" + (f" {interval}" if interval else "")
        raise fail(name, expected + (" or None" if optional else ""), value)
    return float(value)


def indices(name, value, size):
    """`value` (ints in `[0, size)`, any iterable) as a numpy int array."""
    try:
        array = np.asarray(list(np.atleast_1d(value)))
    except TypeError:
        array = None
    ok = array is not None and array.ndim == 1
    if ok and array.size:
        ok = array.dtype.kind in "iu" and array.min() >= 0 and array.max() < size
    if not ok:
        raise fail(name, f"integer indices in [0, {size})", value)
    return array.astype(int)


# Packages whose frames a warning skips, to point at the user's own code.
_INTERNAL = ("keras_vib", "keras", "tensorflow", "jax", "optree")


def warn(message, category=UserWarning):
    """`warnings.warn(message)` attributed to the first caller outside
    keras_vib, Keras and the backends (the user's `fit`, say), not to the
    Keras callback loop that called keras_vib."""
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in _INTERNAL:
            break
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1 if frame else 2)
