"""The demo's VCUT timing: SVD baseline and VCUT graphs alternated on the tiny random-weight SVD, with how busy
the machine was meanwhile (a timing taken while other processes use the CPU is noise)."""
import os
import statistics
import time

from etc_vcut_dev.tiny_workflows import SVD_OVERRIDES, workflow

SVD_PAIRS = 8


def timed_run(server, prompt) -> float:
    start = time.perf_counter()
    server.run(prompt)
    return time.perf_counter() - start


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of the processes ``pids`` so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far, all cores (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How busy the machine was with other work while a timing ran: CPU seconds of every process but ours
    (this one and ``pids``, the ComfyUI server) per wall second, in cores, and the load averages. Timings
    taken while others used a sizeable share of the cores are noise, whatever their spread says."""

    def __init__(self, pids):
        self.pids = [os.getpid(), *pids]

    def __enter__(self):
        self.load_before = os.getloadavg()[0]
        self.start = (time.perf_counter(), machine_cpu_seconds(), cpu_seconds(self.pids))
        return self

    def __exit__(self, *exc):
        wall, machine, ours = (now - then for now, then in zip(
            (time.perf_counter(), machine_cpu_seconds(), cpu_seconds(self.pids)), self.start))
        cores = os.cpu_count()
        self.result = {"other_processes_cores": round(max(0.0, machine - ours) / wall, 2), "cores": cores,
                       "loadavg_1min_before": round(self.load_before, 2),
                       "loadavg_1min_after": round(os.getloadavg()[0], 2)}
        # a quarter of a core of other work shifts a 2-core CPU-bound timing by more than VCUT's gain at this size
        self.result["busy"] = self.result["other_processes_cores"] > 0.25


def svd_timings(server, pairs: int = SVD_PAIRS, log=print) -> dict:
    """Warm-up once per graph, then ``pairs`` alternated (baseline, VCUT) pairs, the order swapped every other
    pair so that a trend in the machine's speed favours neither; each pair shares a seed that no earlier run
    used, so neither ComfyUI version can answer from its output cache. The ratio is the median of the
    per-pair ratios, with their quartiles, minimum and maximum; ``load`` says how busy the machine was."""
    names = {"baseline": "svd_baseline.json", "vcut": "svd_vcut.json"}
    warm = {key: timed_run(server, workflow(name, SVD_OVERRIDES + ["7.seed=1000"])) for key, name in names.items()}
    runs = {key: [] for key in names}
    with OtherLoad([server.process.pid]) as load:
        for i in range(pairs):
            for key in (names if i % 2 == 0 else reversed(list(names))):
                runs[key].append(timed_run(server, workflow(names[key], SVD_OVERRIDES + [f"7.seed={i}"])))
            log(f"[svd timing] pair {i + 1}/{pairs}: baseline {runs['baseline'][-1]:.2f} s, "
                f"VCUT {runs['vcut'][-1]:.2f} s")
    ratios = [v / b for b, v in zip(runs["baseline"], runs["vcut"])]
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"measured": "wall time of one whole prompt (POST /prompt to its /history entry): tiny random-weight SVD "
                        "UNet, 8 frames of 128x64, 25 euler steps, cfg 2.5, VAE decode and MP4",
            "warm_up": warm, "runs": runs, "median": {key: statistics.median(v) for key, v in runs.items()},
            "pair_ratios": ratios, "vcut_over_baseline": statistics.median(ratios),
            "ratio_quartiles": [quartiles[0], quartiles[2]], "ratio_min_max": [min(ratios), max(ratios)],
            "load": load.result}
