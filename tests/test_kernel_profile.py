"""flashmla.bench.kernel_profile on the CPU: the pipeline runs, reports every provider (skipped
ones with their reason), writes its files, and rejects bad arguments."""
import csv

import pytest
import torch

from flashmla.bench import kernel_profile


def test_profile_runs_on_cpu_and_writes_its_files(tmp_path):
    rc = kernel_profile.main(["--shapes", "2,1,100,16", "--providers", "torch", "flashmla-cuda",
                              "--iters", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    calls = list(csv.DictReader(open(tmp_path / "profile_calls.csv")))
    by_provider = {c["provider"]: c for c in calls}
    assert by_provider["torch"]["status"] == "ok"
    assert float(by_provider["torch"]["host_us"]) > 0 and float(by_provider["torch"]["wall_us"]) > 0
    # No GPU kernels on the CPU: device time is a sum over nothing.
    assert float(by_provider["torch"]["device_us"]) == 0.0
    assert by_provider["flashmla-cuda"]["status"] == "skipped" and by_provider["flashmla-cuda"]["reason"]
    md = (tmp_path / "profile.md").read_text()
    assert "| 2,1,100,16 | flashmla-cuda | skipped |" in md


def test_profile_call_counts_every_call():
    calls = []
    per_kernel, wall_us, host_us = kernel_profile.profile_call(lambda: calls.append(1), torch.device("cpu"),
                                                               iters=3, warmup=2)
    assert len(calls) == 2 + 3 + 3 and per_kernel == {} and wall_us >= host_us > 0


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        kernel_profile.main(["--shapes", "2,1,100,16", "--iters", "0", "--device", "cpu"])
    with pytest.raises(ValueError, match="unknown provider"):
        kernel_profile.main(["--shapes", "2,1,100,16", "--providers", "nope", "--device", "cpu"])
    with pytest.raises(ValueError, match="shape"):
        kernel_profile.main(["--shapes", "2,1", "--device", "cpu"])
