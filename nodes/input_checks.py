"""Checks every pack node applies to its inputs before it runs, driven by the node's own INPUT_TYPES.

ComfyUI validates a FLOAT widget by ``min <= value <= max``, which NaN passes (every comparison with NaN is
false), and JSON prompts can carry NaN and Infinity: one such value gives all-NaN latents and a saved
NaN video with status success. So each node's FUNCTION is wrapped to refuse non-finite FLOAT inputs,
naming the input and its range.
"""
import functools
import math

from ..etc_core.files.messages import quote


def _float_inputs(node_class) -> dict:
    """``{name: options}`` of the node's FLOAT inputs, required and optional."""
    types = node_class.INPUT_TYPES()
    found = {}
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            if isinstance(spec, tuple) and spec and spec[0] == "FLOAT":
                found[name] = spec[1] if len(spec) > 1 else {}
    return found


def check_finite_floats(node: str, float_inputs: dict, values: dict):
    """Refuse NaN or infinite values of ``float_inputs`` among ``values``, naming the input."""
    for name, options in float_inputs.items():
        value = values.get(name)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            limits = (f" in [{float(options['min'])}, {float(options['max'])}]" if "min" in options and "max" in options
                      else "")
            raise ValueError(f"{node}: {name} is {quote(value)}, not a finite number; set it to a number{limits}")


def guard_float_inputs(node_class, node: str):
    """Wrap ``node_class``'s FUNCTION so non-finite FLOAT inputs are refused before it runs."""
    function = getattr(node_class, node_class.FUNCTION)
    if getattr(function, "_finite_floats_checked", False):
        return node_class
    floats = None

    @functools.wraps(function)
    def checked(self, *args, **kwargs):
        nonlocal floats
        if floats is None:  # INPUT_TYPES lists model folders: read them when the node first runs
            floats = _float_inputs(node_class)
        check_finite_floats(node, floats, kwargs)
        return function(self, *args, **kwargs)

    checked._finite_floats_checked = True
    setattr(node_class, node_class.FUNCTION, checked)
    return node_class
