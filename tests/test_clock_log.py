"""flashmla.bench.clock_log: nvidia-smi samples and the windows they are summarised over (CPU)."""
import datetime
import math

from flashmla.bench import clock_log

LINES = [
    "2026/12/07 11:42:01.000, 1980, 120.5, 40",
    "2026/12/07 11:42:01.050, 1755, 690.0, 55",
    "2026/12/07 11:42:01.100, 1740, [N/A], 56",   # a field that does not parse: skipped
    "2026/12/07 11:42:01.150, 1725, 700.0, 57",
    "timestamp, clocks.sm [MHz], power.draw.instant [W], temperature.gpu",  # a header: skipped
    "2026/12/07 11:42:01.200, 1650",                # cut off: skipped
    "2026/12/07 11:42:02.000, 1980, 100.0, 50",
]


def at(ms):
    return datetime.datetime(2026, 12, 7, 11, 42, 1) + datetime.timedelta(milliseconds=ms)


def test_parse_samples_skips_what_does_not_parse():
    samples = clock_log.parse_samples(LINES)
    assert [when for when, _ in samples] == [at(0), at(50), at(150), at(1000)]
    assert samples[1][1] == {"clocks.sm": 1755.0, "power.draw.instant": 690.0, "temperature.gpu": 55.0}


def test_window_stats_takes_medians_of_the_samples_inside():
    samples = clock_log.parse_samples(LINES)
    stats = clock_log.window_stats(samples, [(at(40), at(160))])
    assert stats == {"sm_mhz": 1740.0, "power_w": 695.0, "temp_c": 56.0, "samples": 2}
    # two windows pool their samples; one that holds none gives NaN, not a number
    both = clock_log.window_stats(samples, [(at(40), at(60)), (at(990), at(1010))])
    assert both["samples"] == 2 and both["sm_mhz"] == (1755.0 + 1980.0) / 2
    empty = clock_log.window_stats(samples, [(at(300), at(400))])
    assert empty["samples"] == 0 and math.isnan(empty["sm_mhz"]) and math.isnan(empty["power_w"])


def test_fallback_fields_read_power_draw():
    lines = ["2026/12/07 11:42:01.050, 1755, 650.0, 55"]
    samples = clock_log.parse_samples(lines, clock_log.FALLBACK_FIELDS)
    assert clock_log.window_stats(samples, [(at(0), at(100))])["power_w"] == 650.0


def test_start_without_nvidia_smi_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(clock_log.shutil, "which", lambda name: None)
    assert clock_log.ClockLog.start(str(tmp_path / "clocks.csv")) is None
    assert "nvidia-smi not found" in capsys.readouterr().out


FAKE_NVIDIA_SMI = """#!{python}
import datetime, sys, time
if any("power.draw.instant" in a for a in sys.argv):
    sys.exit(2)  # an older driver: the field is unknown, so the fallback list must be used
try:
    while True:
        now = datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        print(f"{{now}}, 1700, 650.0, 60", flush=True)
        time.sleep({interval_s})
except KeyboardInterrupt:
    pass
"""


def test_start_window_stop_with_a_fake_nvidia_smi(monkeypatch, tmp_path):
    """The whole cycle against a stand-in nvidia-smi that lacks power.draw.instant: the fallback
    fields are used, a window collects the samples taken during it, and stop() ends the process."""
    import sys
    import time
    fake = tmp_path / "nvidia-smi"
    fake.write_text(FAKE_NVIDIA_SMI.format(python=sys.executable, interval_s=0.02))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    log = clock_log.ClockLog.start(str(tmp_path / "clocks.csv"), interval_ms=20)
    assert log is not None and log.fields == clock_log.FALLBACK_FIELDS
    with log.window("timed"):
        time.sleep(0.3)
    log.stop()
    assert log.process.poll() is not None
    stats = log.stats("timed")
    assert stats["samples"] >= 5 and stats["sm_mhz"] == 1700.0 and stats["power_w"] == 650.0
    assert log.stats("never timed")["samples"] == 0


def test_samples_are_read_incrementally_and_a_partial_line_waits(tmp_path):
    path = tmp_path / "clocks.csv"
    path.write_text(LINES[0] + "\n" + LINES[1][:20])  # the second line is still being written
    log = clock_log.ClockLog(process=None, path=str(path), fields=clock_log.FIELDS, out=None)
    assert [when for when, _ in log.samples()] == [at(0)]
    with open(path, "a") as f:
        f.write(LINES[1][20:] + "\n" + LINES[3] + "\n")
    assert [when for when, _ in log.samples()] == [at(0), at(50), at(150)]
    log.windows["w"] = [(at(40), at(200))]
    assert log.stats("w")["samples"] == 2


def test_bench_cli_records_clocks_with_a_fake_nvidia_smi(tmp_path):
    """`python -m flashmla.bench --clocks` on the CPU with a stand-in nvidia-smi (a sample every
    millisecond; 40 timed calls, so that each window holds several): the timed rows carry its clock and power in bench.csv, the others leave them empty."""
    import csv
    import os
    import subprocess
    import sys
    fake_dir = tmp_path / "bin"
    fake_dir.mkdir()
    fake = fake_dir / "nvidia-smi"
    fake.write_text(FAKE_NVIDIA_SMI.format(python=sys.executable, interval_s=0.001))
    fake.chmod(0o755)
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{fake_dir}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
           "FLASHMLA_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(repo)}
    env.pop("TRITON_INTERPRET", None)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "flashmla.bench", "--device", "cpu", "--shape", "2,1,100,16",
                           "--providers", "torch,flashmla-cuda", "--cpu-reps", "40", "--no-e2e", "--no-ceilings",
                           "--no-plots", "--clocks", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "clocks: SM clock and board power sampled" in proc.stdout, proc.stdout
    with open(out / "bench.csv", newline="") as f:
        rows = {r["provider"]: r for r in csv.DictReader(f)}
    assert rows["torch"]["status"] == "ok" and float(rows["torch"]["sm_mhz"]) == 1700
    assert float(rows["torch"]["power_w"]) == 650
    assert rows["flashmla-cuda"]["status"] == "skipped" and rows["flashmla-cuda"]["sm_mhz"] == ""
