"""nodes/node_spec.py: the classic node API made from a spec, and on hosts with ``comfy_api.latest``
(ComfyUI 0.3.75) the V3 twin of every pack node, checked against what the real server lists for the
classic node and run through ComfyUI's executor (docs/node-api.md)."""
import json
import math
import os
import sys

import pytest

from etc_vcut_dev.comfy_host import PromptError, comfyui_path
from etc_vcut_dev.pack import import_pack, pack_submodule
from etc_vcut_dev.video_read import read_video_metadata


@pytest.fixture(scope="module")
def spec():
    return pack_submodule("nodes.node_spec")


def _toy(spec, choices):
    """A node with every kind of input, its dropdown read from ``choices`` each time the host asks."""
    @spec.node(spec.NodeSpec(
        "ToyNode", "Toy Node", "testing/toy", "adds", "run",
        inputs=(spec.Input("a", "INT", "first", {"default": 1, "min": 0, "max": 9}),
                spec.Input("extra", "FLOAT", "optional one", {"default": 0.5}, optional=True),
                spec.Input("pick", lambda: list(choices), "a dropdown", {"default": "x"}),
                spec.Input("model", "MODEL", "a socket")),
        outputs=(spec.Output("INT", "the sum", "total"), spec.Output("MODEL", "the model")),
        experimental=True, hidden={"prompt": "PROMPT"}))
    class Toy:
        def run(self, a, pick, model, extra=0.5, prompt=None):
            return (a + extra, model)
    return Toy


def test_classic_api_from_a_spec(spec):
    choices = ["x", "y"]
    toy = _toy(spec, choices)
    types = toy.INPUT_TYPES()
    assert list(types) == ["required", "optional", "hidden"]
    assert list(types["required"]) == ["a", "pick", "model"]  # optional inputs go to their own section
    assert types["required"]["a"] == ("INT", {"default": 1, "min": 0, "max": 9, "tooltip": "first"})
    assert types["required"]["pick"] == (["x", "y"], {"default": "x", "tooltip": "a dropdown"})
    assert types["required"]["model"] == ("MODEL", {"tooltip": "a socket"})
    assert types["optional"] == {"extra": ("FLOAT", {"default": 0.5, "tooltip": "optional one"})}
    assert types["hidden"] == {"prompt": "PROMPT"}
    choices.append("z")  # a model file added while the server runs shows up in the next INPUT_TYPES
    assert toy.INPUT_TYPES()["required"]["pick"][0] == ["x", "y", "z"]
    assert (toy.RETURN_TYPES, toy.RETURN_NAMES, toy.OUTPUT_TOOLTIPS) == (("INT", "MODEL"), ("total", "MODEL"),
                                                                        ("the sum", "the model"))
    assert (toy.FUNCTION, toy.CATEGORY, toy.DESCRIPTION) == ("run", "testing/toy", "adds")
    assert toy.EXPERIMENTAL is True and toy.OUTPUT_NODE is False
    assert spec.mappings(toy) == ({"ToyNode": toy}, {"ToyNode": "Toy Node"})
    assert toy().run(a=2, pick="x", model="m") == (2.5, "m")


def test_float_guard_still_reads_the_spec_inputs(spec):
    """nodes/input_checks.py finds the FLOAT inputs of a spec'd node and refuses NaN before it runs."""
    checks = pack_submodule("nodes.input_checks")
    toy = checks.guard_float_inputs(_toy(spec, ["x"]), "ToyNode")
    with pytest.raises(ValueError, match=r"ToyNode: extra is .*not a finite number"):
        toy().run(a=1, pick="x", model=None, extra=math.nan)
    assert toy().run(a=1, pick="x", model=None, extra=1.0) == (2.0, None)


def test_every_pack_node_has_a_spec_with_help_on_everything():
    pack = import_pack()
    assert len(pack.NODE_CLASS_MAPPINGS) == 16
    for name, node_class in pack.NODE_CLASS_MAPPINGS.items():
        spec = node_class.SPEC
        assert spec.node_id == name and pack.NODE_DISPLAY_NAME_MAPPINGS[name] == spec.display_name
        assert spec.description.strip() and all(i.tooltip.strip() for i in spec.inputs), name
        assert all(o.tooltip.strip() for o in spec.outputs), name
        assert len({i.name for i in spec.inputs}) == len(spec.inputs), f"{name}: an input name twice"
    experimental = {n for n, c in pack.NODE_CLASS_MAPPINGS.items() if c.EXPERIMENTAL}
    assert experimental == {"ETCTrainer", "ETCTrainCommand", "ETCVideoFilter"}


def _host_has_v3() -> bool:
    return os.path.isdir(os.path.join(comfyui_path(), "comfy_api", "latest"))


@pytest.fixture(scope="module")
def v3_host(comfy_server):
    """ComfyUI's executor in this process, on the session server's folders (so both list the same model
    files), with the V3 twins at hand."""
    if not _host_has_v3():
        pytest.skip("this ComfyUI has no comfy_api.latest (V3 node API)")
    from etc_vcut_dev.inprocess import InProcessComfy
    host = InProcessComfy(comfy_server.base)
    pack_classes = {n: c for n, c in host.nodes.NODE_CLASS_MAPPINGS.items() if hasattr(c, "SPEC")}
    node_spec = sys.modules[next(iter(pack_classes.values())).__module__.rsplit(".", 1)[0] + ".node_spec"]
    twins = {name: node_spec.v3_node(c) for name, c in pack_classes.items()}
    for name, twin in twins.items():  # what ComfyUI's loader sets on every class it registers
        twin.RELATIVE_PYTHON_MODULE = pack_classes[name].RELATIVE_PYTHON_MODULE
    return host, twins


def _as_classic(v3_info: dict, classic: dict) -> dict:
    """The V3 node's /object_info entry in the classic spelling; what this undoes is all that differs."""
    info = json.loads(json.dumps(v3_info))
    if info["output_node"] and "hidden" not in classic["input"]:  # V3 gives every output node these two
        assert info["input"].pop("hidden") == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
        assert info["input_order"].pop("hidden") == ["prompt", "extra_pnginfo"]
    for section, inputs in info["input"].items():
        for name, (kind, *options) in inputs.items():
            options = options[0] if options else {}
            if section == "hidden":
                inputs[name] = kind  # V3 lists ("PROMPT",), classic "PROMPT"
            elif kind == "COMBO":  # V3: ("COMBO", {"options": [...], "multiselect": false}), classic: ([...], {})
                choices = options.pop("options")
                assert options.pop("multiselect") is False
                inputs[name] = [choices, options]
            elif kind == "STRING":  # V3 says multiline false, classic leaves it out (the frontend's default)
                assert options.pop("multiline") is False
    for flag in ("deprecated", "experimental", "api_node"):  # V3 lists them false, classic leaves them out
        if info[flag] is False:
            del info[flag]
    # ComfyUI 0.8.0's V3 lists output_matchtypes (outputs typed like an input) as None when there are none;
    # its classic entry leaves the key out
    if info.get("output_matchtypes", "") is None and "output_matchtypes" not in classic:
        del info["output_matchtypes"]
    return info


def test_v3_twins_list_what_the_classic_nodes_list(comfy_server, v3_host):
    """What a user's frontend gets for each pack node (/object_info of the real server, classic) is what it
    would get for its V3 twin, up to spelling the frontend reads alike (COMBO options, false flags)."""
    _, twins = v3_host
    listed = comfy_server.get("/object_info")
    assert len(twins) == 16
    for name, twin in twins.items():
        assert _as_classic(twin.GET_NODE_INFO_V1(), listed[name]) == listed[name], name


def test_v3_twin_runs_in_comfyuis_executor_with_the_float_guard(v3_host):
    """A V3 twin registered in the executor runs the classic function: hidden inputs (the prompt embedded
    in the file) reach it, and a NaN FLOAT is refused by the same check as on the classic node."""
    host, twins = v3_host
    host.nodes.NODE_CLASS_MAPPINGS["V3TwinSaveVideo"] = twins["ETCSaveVideo"]
    try:
        def graph(frame_rate):
            return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 4,
                                                                  "color": 255}},
                    "2": {"class_type": "V3TwinSaveVideo", "inputs": {"images": ["1", 0], "frame_rate": frame_rate,
                                                                       "filename_prefix": "v3twin/clip",
                                                                       "format": "webp"}}}
        outputs = host.run(graph(8.0))
        (entry,) = outputs["2"]["images"]
        assert outputs["2"]["animated"] == [True]
        metadata = read_video_metadata(host.output_path(entry["subfolder"], entry["filename"]))
        assert metadata["prompt"]["2"]["class_type"] == "V3TwinSaveVideo"
        with pytest.raises(PromptError):
            host.run(graph(math.nan))
        (error,) = [data for event, data in host.executor.status_messages if event == "execution_error"]
        assert "ETCSaveVideo: frame_rate is nan, not a finite number" in error["exception_message"]
    finally:
        del host.nodes.NODE_CLASS_MAPPINGS["V3TwinSaveVideo"]
