#!/usr/bin/env python3
"""ETC section 5.2 sizes through a real ComfyUI server: 256 frames of 256x160 (16x16 grid) and 16 frames
of 512x320 (4x4 grid), with the tiny SD 2.x fixture (the point is that the grid pipeline runs at these
sizes, and how much memory it takes). Each size runs in a fresh server; the peak is the server process's
VmHWM (peak resident memory) on a CPU, or torch's peak allocation on a GPU host.
"""
import json
import os
import platform
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

from etc_vcut_dev.comfy_host import ComfyServer
from etc_vcut_dev.graphs import etc_graph

CASES = [("long video", 256, 256, 160, "16x16"), ("high resolution", 16, 512, 320, "4x4")]


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    rows = []
    for name, frames, width, height, layout in CASES:
        with ComfyServer(tempfile.mkdtemp(prefix="etc-long-")) as server:
            baseline = peak_rss_mib(server.process.pid)
            g = etc_graph(frames=frames, layout=layout, size=width, steps=2, prefix="long", video=True)
            g["etc"]["inputs"]["frame_height"] = height
            start = time.perf_counter()
            server.run(g, timeout=3000)
            seconds = time.perf_counter() - start
            rows.append({"case": name, "frames": frames, "width": width, "height": height, "layout": layout,
                         "steps": 2, "seconds": seconds, "peak_rss_mib": peak_rss_mib(server.process.pid),
                         "idle_rss_mib": baseline})
            print(rows[-1], flush=True)
    print("| case | frames | frame size | grid | seconds (2 steps + decode + MP4) | peak RSS (MiB) | idle server (MiB) |")
    print("|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['frames']} | {r['width']}x{r['height']} | {r['layout']} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {r['idle_rss_mib']:.0f} |")
    with open(os.path.join(HERE, "results", "etc_long_video_cpu.json"), "w") as f:
        json.dump({"machine": f"CPU {platform.machine()}, tiny SD 2.x fixture (random weights)", "rows": rows}, f,
                  indent=1)


if __name__ == "__main__":
    main()
