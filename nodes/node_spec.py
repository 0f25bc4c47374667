"""One declarative spec per node: ComfyUI's classic node API on every host, and a V3 schema where one exists.

A node module describes each node once (:class:`NodeSpec`: id, name, category, description, inputs and
outputs with their tooltips) and decorates the class holding the node's function with :func:`node`, which
sets the classic attributes every ComfyUI reads (INPUT_TYPES, RETURN_TYPES, RETURN_NAMES, FUNCTION,
CATEGORY, DESCRIPTION, OUTPUT_NODE) and those newer hosts read (OUTPUT_TOOLTIPS, EXPERIMENTAL; a host that
does not know one ignores it). :func:`v3_node` builds the same node as a ``comfy_api.latest`` ``io.ComfyNode``
(ComfyUI 0.3.x and later); the pack registers the classic classes on every host, for why see docs/node-api.md.
"""
import dataclasses
from typing import Callable, Union

@dataclasses.dataclass(frozen=True)
class Input:
    """One input. ``type`` is a ComfyUI type name ("INT", "MODEL", ...) or, for a dropdown, a function
    returning its choices (called each time the host asks, so new model files show up). ``options`` are
    the classic widget options (default, min, max, step)."""
    name: str
    type: Union[str, Callable[[], list]]
    tooltip: str
    options: dict = dataclasses.field(default_factory=dict)
    optional: bool = False

    def kind(self):
        """The type name, or the dropdown's current list of choices."""
        return self.type() if callable(self.type) else self.type

    def classic(self) -> tuple:
        return (self.kind(), dict(self.options, tooltip=self.tooltip))


@dataclasses.dataclass(frozen=True)
class Output:
    type: str
    tooltip: str
    name: str = None  # shown on the output socket; the type name when None

    @property
    def shown_name(self) -> str:
        return self.name or self.type


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    category: str
    description: str
    function: str                     # the name of the node class's method that runs the node
    inputs: tuple
    outputs: tuple = ()
    output_node: bool = False
    experimental: bool = False
    hidden: dict = dataclasses.field(default_factory=dict)  # argument name -> ComfyUI hidden value ("PROMPT")

    def input_types(self) -> dict:
        """Classic INPUT_TYPES: required inputs, then optional ones, each in the spec's order."""
        types = {"required": {i.name: i.classic() for i in self.inputs if not i.optional}}
        optional = {i.name: i.classic() for i in self.inputs if i.optional}
        if optional:
            types["optional"] = optional
        if self.hidden:
            types["hidden"] = dict(self.hidden)
        return types


def node(spec: NodeSpec):
    """Class decorator: the classic node API of ``spec`` on the class that holds ``spec.function``."""
    def build(cls):
        cls.SPEC = spec
        cls.INPUT_TYPES = classmethod(lambda _cls: spec.input_types())
        cls.RETURN_TYPES = tuple(o.type for o in spec.outputs)
        cls.RETURN_NAMES = tuple(o.shown_name for o in spec.outputs)
        cls.OUTPUT_TOOLTIPS = tuple(o.tooltip for o in spec.outputs)
        cls.FUNCTION, cls.CATEGORY, cls.DESCRIPTION = spec.function, spec.category, spec.description
        cls.OUTPUT_NODE, cls.EXPERIMENTAL = spec.output_node, spec.experimental
        return cls
    return build


def mappings(*classes) -> tuple:
    """A module's (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) from its decorated node classes."""
    return ({c.SPEC.node_id: c for c in classes}, {c.SPEC.node_id: c.SPEC.display_name for c in classes})


def _v3_input(io, spec_input: Input):
    kind = spec_input.kind()
    common = dict(spec_input.options, optional=spec_input.optional, tooltip=spec_input.tooltip)
    if isinstance(kind, list):
        return io.Combo.Input(spec_input.name, options=kind, **common)
    widgets = {"INT": io.Int, "FLOAT": io.Float, "STRING": io.String, "BOOLEAN": io.Boolean}
    return (widgets[kind] if kind in widgets else io.Custom(kind)).Input(spec_input.name, **common)


def v3_node(node_class):
    """The V3 (``comfy_api.latest``) twin of a classic node made by :func:`node`: the same schema, and its
    ``execute`` runs the classic function (with the checks wrapped around it, nodes/input_checks.py)."""
    from comfy_api.latest import io
    spec = node_class.SPEC

    class V3Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
                description=spec.description, inputs=[_v3_input(io, i) for i in spec.inputs],
                outputs=[io.Custom(o.type).Output(display_name=o.name, tooltip=o.tooltip) for o in spec.outputs],
                hidden=[io.Hidden(value) for value in spec.hidden.values()], is_output_node=spec.output_node,
                is_experimental=spec.experimental)

        @classmethod
        def execute(cls, **inputs):
            hidden = {name: getattr(cls.hidden, name) for name in spec.hidden}
            result = getattr(node_class(), spec.function)(**inputs, **hidden)
            if isinstance(result, dict):  # {"ui": ..., "result": ...}; 0.3.75's NodeOutput.from_dict cannot build it
                return io.NodeOutput(*result.get("result", ()), ui=result.get("ui"))
            return io.NodeOutput(*result)

    V3Node.__name__ = V3Node.__qualname__ = node_class.__name__
    return V3Node
