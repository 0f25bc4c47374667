"""Runs one tiny-SVD graph under core's torch.compile wrapper (eager backend) in ComfyUI's executor in this
process and prints dynamo's counters as JSON: graph breaks (by reason), graphs compiled, frames.

    python -m etc_vcut_dev.dynamo_counts OUT_DIR [--vcut] [--cutoff C]

A process of its own per graph, so each count starts from zero (dynamo's caches and counters are global).
"""
import argparse
import json
import sys

from etc_vcut_dev.comfy_host import comfyui_path
from etc_vcut_dev.graphs import svd_graph
from etc_vcut_dev.inprocess import InProcessComfy

STEPS = 4


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--vcut", action="store_true")
    parser.add_argument("--cutoff", type=int)
    args = parser.parse_args()
    sys.path.insert(0, comfyui_path())
    from comfy.cli_args import args as comfy_args
    # PyTorch's attention, as on a GPU: ComfyUI's CPU default (sub-quadratic attention) reads the free memory
    # through psutil inside every attention, a graph break of the host's own in every block.
    comfy_args.use_pytorch_cross_attention = True
    host = InProcessComfy(args.out_dir)
    import torch._dynamo.utils
    graph = svd_graph(steps=STEPS, frames=2, size=32, prefix="compiled", vcut=("linear", "linear") if args.vcut else None,
                      cutoff=args.cutoff)
    graph["compile"] = {"class_type": "ETCVCUTTestCompileEager",
                        "inputs": {"model": graph["sample"]["inputs"]["model"]}}
    graph["sample"]["inputs"]["model"] = ["compile", 0]
    host.run(graph)
    counters = torch._dynamo.utils.counters
    print(json.dumps({"graph_breaks": sum(counters["graph_break"].values()),
                      "break_reasons": sorted(counters["graph_break"]),
                      "unique_graphs": counters["stats"]["unique_graphs"],
                      "frames": dict(counters["frames"]), "recompiles": dict(counters.get("recompiles", {})),
                      "latent": host.output_path("compiled.safetensors")}))


if __name__ == "__main__":
    main()
