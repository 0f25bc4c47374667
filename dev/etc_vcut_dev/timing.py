"""Wall-clock timing shared by the benchmarks."""
import statistics
import time


def median_seconds(fn, repeats: int, sync=lambda: None, warmup: bool = False) -> float:
    """Median over ``repeats`` calls of ``fn`` (then ``sync``, e.g. torch.cuda.synchronize); ``warmup``
    makes one untimed call first."""
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def etc_size_arguments(parser):
    """The options every ETC benchmark takes: the device and the clip's size (frames of size x size pixels)."""
    import torch
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    return parser
