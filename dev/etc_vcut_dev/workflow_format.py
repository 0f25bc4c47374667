#!/usr/bin/env python3
"""Convert between ComfyUI's two workflow formats with the server's /object_info.

API format (what scripts queue): {id: {"class_type", "inputs": {name: value or [node, slot]}}}.
UI format (what users drag in): LiteGraph nodes with widgets_values in input order, and links.

    python scripts/workflow_format.py workflows/api/svd_vcut.json workflows/ui/svd_vcut.json \\
        --server http://127.0.0.1:8188
"""
import argparse
import json
import urllib.request

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only nodes, never queued (the 2024 frontend has no MarkdownNote)


def _inputs(info: dict):
    for group in ("required", "optional"):
        for name, spec in info["input"].get(group, {}).items():
            yield name, spec


def _is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _extra_widget_values(name, spec):
    """Widgets the frontend adds after an input's own: seed control, image upload."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if (spec[0] == "INT" and name in SEED_NAMES) or options.get("control_after_generate"):
        return ["fixed"]
    if options.get("image_upload"):
        return ["image"]
    return []


def _columns(prompt: dict) -> dict:
    depth = {}

    def visit(node_id):
        if node_id not in depth:
            depth[node_id] = 0
            links = [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = max((visit(n) + 1 for n in links), default=0)
        return depth[node_id]

    for node_id in prompt:
        visit(node_id)
    return depth


def api_to_ui(prompt: dict, object_info: dict) -> dict:
    ids = {node_id: i + 1 for i, node_id in enumerate(prompt)}
    depth, row_of = _columns(prompt), {}
    nodes, links = [], []
    for node_id, node in prompt.items():
        info = object_info[node["class_type"]]
        row = row_of[depth[node_id]] = row_of.get(depth[node_id], -1) + 1
        ui = {"id": ids[node_id], "type": node["class_type"], "pos": [50 + 400 * depth[node_id], 50 + 320 * row],
              "size": [320, 240], "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
              "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": []}
        for name, spec in _inputs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list):
                links.append([len(links) + 1, ids[value[0]], value[1], ids[node_id], len(ui["inputs"]),
                              object_info[prompt[value[0]]["class_type"]]["output"][value[1]]])
                ui["inputs"].append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO",
                                     "link": links[-1][0]})
                if _is_widget(spec):
                    ui["inputs"][-1]["widget"] = {"name": name}
                    ui["widgets_values"] += [None] + _extra_widget_values(name, spec)
            elif _is_widget(spec) and name in node["inputs"]:
                ui["widgets_values"] += [value] + _extra_widget_values(name, spec)
            elif not _is_widget(spec):  # an unwired socket (an optional one), saved as the frontend saves it
                ui["inputs"].append({"name": name, "type": spec[0], "link": None})
        for slot, (kind, label) in enumerate(zip(info["output"], info.get("output_name", info["output"]))):
            ui["outputs"].append({"name": label, "type": kind, "links": [], "slot_index": slot})
        nodes.append(ui)
    by_id = {n["id"]: n for n in nodes}
    for link in links:
        by_id[link[1]]["outputs"][link[2]]["links"].append(link[0])
    order = sorted(prompt, key=lambda n: depth[n])
    for i, node_id in enumerate(order):
        by_id[ids[node_id]]["order"] = i
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}}, "version": 0.4}



def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the frontend queues for a UI workflow (node ids become strings; notes left out)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, spec in _inputs(info):
            if _is_widget(spec):
                value = values.pop(0) if values else None
                del values[:len(_extra_widget_values(name, spec))]
                if name not in linked and value is not None:
                    inputs[name] = value
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def declared_only(prompt: dict, object_info: dict) -> dict:
    """The prompt as a host reads it: inputs its node types do not declare are dropped (a workflow may carry
    newer hosts' widgets, such as UNETLoader's weight_dtype, which older hosts ignore)."""
    declared = {t: {**i["input"].get("required", {}), **i["input"].get("optional", {})} for t, i in object_info.items()}
    return {n: {"class_type": v["class_type"],
                "inputs": {k: x for k, x in v["inputs"].items() if k in declared[v["class_type"]]}}
            for n, v in prompt.items()}


def renumber(prompt: dict) -> dict:
    """The API prompt with node ids 1..N in file order (as the UI conversion numbers them)."""
    ids = {node_id: str(i + 1) for i, node_id in enumerate(prompt)}
    return {ids[n]: {"class_type": node["class_type"],
                     "inputs": {k: [ids[v[0]], v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}}
            for n, node in prompt.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("api_json")
    parser.add_argument("ui_json")
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    args = parser.parse_args()
    with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=60) as r:
        object_info = json.loads(r.read())
    with open(args.api_json) as f:
        prompt = json.load(f)
    with open(args.ui_json, "w") as f:
        json.dump(api_to_ui(prompt, object_info), f, indent=1)


if __name__ == "__main__":
    main()
