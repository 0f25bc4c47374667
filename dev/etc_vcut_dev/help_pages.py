"""The nodes' help pages, web/docs/<node id>.md (the ComfyUI frontend shows one in its node help panel).

Each page is written by hand (what the node does, the paper's idea, an example) except its Inputs and
Outputs sections, which are made here from the node's spec (nodes/node_spec.py), so they say what the
tooltips say. ``python -m etc_vcut_dev.help_pages`` rewrites those sections after a spec changed.
"""
import os

from etc_vcut_dev.comfy_host import REPO
from etc_vcut_dev.pack import import_pack

DOCS = os.path.join(REPO, "web", "docs")
INPUTS, OUTPUTS, AFTER = "## Inputs", "## Outputs", "## Example"


def _range(options: dict) -> str:
    parts = []
    if "min" in options and "max" in options:
        parts.append(f"{options['min']:g} to {options['max']:g}" if isinstance(options["min"], float)
                     else f"{options['min']} to {options['max']}")
    if "default" in options:
        parts.append(f"default `{options['default']}`" if options["default"] != "" else "default empty")
    return ", ".join(parts)


def input_line(spec_input) -> str:
    kind = "dropdown" if callable(spec_input.type) else spec_input.type
    details = ", ".join(p for p in (kind, _range(spec_input.options), "optional" if spec_input.optional else "") if p)
    return f"- **{spec_input.name}** ({details}): {spec_input.tooltip}"


def sections(spec) -> str:
    """The Inputs and Outputs sections of ``spec``'s page."""
    outputs = [f"- **{o.shown_name}** ({o.type}): {o.tooltip}" for o in spec.outputs] or [
        "None: the node shows its result on itself and writes it under ComfyUI's output/."]
    return "\n".join([INPUTS, "", *map(input_line, spec.inputs), "", OUTPUTS, "", *outputs, "", ""])


def updated(page: str, spec) -> str:
    """``page`` with its Inputs and Outputs sections made from ``spec`` (the rest kept)."""
    head, found, _ = page.partition(INPUTS + "\n")
    _, after, tail = page.partition("\n" + AFTER)
    if not found or not after:
        raise ValueError(f"{spec.node_id}: the page needs an '{INPUTS}' and an '{AFTER}' section")
    return head + sections(spec) + AFTER + tail


def page_path(node_id: str) -> str:
    return os.path.join(DOCS, f"{node_id}.md")


def main():
    for node_id, node_class in import_pack().NODE_CLASS_MAPPINGS.items():
        with open(page_path(node_id)) as f:
            page = f.read()
        new = updated(page, node_class.SPEC)
        if new != page:
            with open(page_path(node_id), "w") as f:
                f.write(new)
            print(f"updated {os.path.relpath(page_path(node_id), REPO)}")


if __name__ == "__main__":
    main()
