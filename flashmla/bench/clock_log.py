"""SM clock and board power while kernels are timed, sampled by ``nvidia-smi`` in the background.

Why: on the compute-bound rows both our kernel and FlashMLA run at the H100's 700 W power cap,
which sets their clocks (docs/kernel-design.md 7.27), and the same code moves by several percent
between machine starts (7.30). A timing with the clock and power it ran at says which of the two
moved. ``nvidia-smi --loop-ms`` writes one line per interval; each timing is a wall-clock window, and a
window's statistics are the medians of the samples inside it.

    log = ClockLog.start("/tmp/clocks.csv")          # None where nvidia-smi is missing
    with log.window(("shape", "variant")):
        time_something()
    log.stop()
    log.stats(("shape", "variant"))  # {'sm_mhz': 1755.0, 'power_w': 690.2, 'samples': 12}
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import shutil
import signal
import statistics
import subprocess
import time

# timestamp first; the rest are read by name. power.draw.instant is the instantaneous reading
# (power.draw is averaged over a second on recent drivers); older drivers lack it. Either is a
# sampled sensor (on A100/H100 it is reported to cover only part of each period), so read the
# power as a level beside the clock, not as energy.
FIELDS = ("timestamp", "clocks.sm", "power.draw.instant", "temperature.gpu")
FALLBACK_FIELDS = ("timestamp", "clocks.sm", "power.draw", "temperature.gpu")
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S.%f"


def parse_samples(lines, fields=FIELDS):
    """CSV lines of ``nvidia-smi --format=csv,noheader,nounits`` -> [(datetime, {field: float})].
    Lines that do not parse (a header, "[N/A]", a cut-off last line) are skipped."""
    samples = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(fields):
            continue
        try:
            when = datetime.datetime.strptime(parts[0], TIMESTAMP_FORMAT)
            values = {name: float(value) for name, value in zip(fields[1:], parts[1:])}
        except ValueError:
            continue
        samples.append((when, values))
    return samples


def window_stats(samples, windows):
    """Medians of the samples inside any of ``windows`` ([(start, end) datetimes]):
    {'sm_mhz', 'power_w', 'temp_c', 'samples'}; NaN (and 0 samples) where none falls inside."""
    inside = [values for when, values in samples if any(start <= when <= end for start, end in windows)]

    def median_of(*names):
        for name in names:
            picked = [v[name] for v in inside if name in v]
            if picked:
                return statistics.median(picked)
        return float("nan")
    return {"sm_mhz": median_of("clocks.sm"), "power_w": median_of("power.draw.instant", "power.draw"),
            "temp_c": median_of("temperature.gpu"), "samples": len(inside)}


class ClockLog:
    """A background ``nvidia-smi`` sampler; see the module docstring."""

    def __init__(self, process, path, fields, out):
        self.process, self.path, self.fields, self._out = process, path, fields, out
        self.windows = {}
        self._samples, self._read_to = [], 0  # parsed so far, and up to which byte of the file

    @classmethod
    def start(cls, path, interval_ms=50):
        """Starts sampling into ``path``; None (and a printed reason) where nvidia-smi cannot."""
        if shutil.which("nvidia-smi") is None:
            print("clock log: nvidia-smi not found, no clocks recorded", flush=True)
            return None
        # nvidia-smi's stdout into a file is block-buffered: line-buffer it where stdbuf exists, so
        # the file is current and a stop loses no samples.
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        for fields in (FIELDS, FALLBACK_FIELDS):
            out = open(path, "w")
            process = subprocess.Popen(
                line_buffered + ["nvidia-smi", "-i", "0", f"--query-gpu={','.join(fields)}",
                                 "--format=csv,noheader,nounits", f"--loop-ms={interval_ms}"],
                stdout=out, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # an unknown field makes nvidia-smi exit at once
            if process.poll() is None:
                log = cls(process, path, fields, out)
                atexit.register(log.stop)  # no sampler left running if the caller dies first
                return log
            out.close()
        print("clock log: nvidia-smi refused both field lists, no clocks recorded", flush=True)
        return None

    @contextlib.contextmanager
    def window(self, key):
        """Marks the wall-clock span of the body as one window of ``key``."""
        begin = datetime.datetime.now()
        try:
            yield
        finally:
            self.windows.setdefault(key, []).append((begin, datetime.datetime.now()))

    def stop(self):
        """Ends sampling (SIGINT, as Ctrl-C: nvidia-smi exits its loop cleanly)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._out.close()

    def samples(self):
        """Every sample written so far; each call parses only the complete lines added since the last."""
        with open(self.path, "rb") as f:
            f.seek(self._read_to)
            new = f.read()
        complete = new[:new.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self._read_to += len(complete)
        self._samples += parse_samples(complete.decode(errors="replace").splitlines(), self.fields)
        return self._samples

    def stats(self, key):
        """window_stats over every window recorded under ``key``. Called right after a window, the
        last interval's sample may not be written yet; a window of ~100 ms keeps the others."""
        return window_stats(self.samples(), self.windows.get(key, []))
