"""The peak of a memory reading while a block runs, sampled in a thread (tests and benches on the CPU, where
no allocator keeps a high-water mark of its own)."""
import threading
import time


class PeakMemory:
    """``growth``: the peak of ``read()`` (bytes) above its value on entry, sampled every ``interval`` seconds."""

    def __init__(self, read, interval: float = 0.01):
        self.read, self.interval = read, interval

    def __enter__(self):
        self.start = self.peak = self.read()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.growth = self.peak - self.start
