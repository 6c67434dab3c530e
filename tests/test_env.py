"""flashmla.env: the environment report, requirement checks and the notebooks' step log."""
import json

import pytest
import torch

from flashmla import env


# --------------------------------------------------------------------------- report
def test_report_describes_this_machine():
    report = env.report("cpu")
    assert report.torch == torch.__version__
    assert report.cuda_available == torch.cuda.is_available()
    assert report.device == "cpu"
    # The reference backend runs everywhere; every backend says why when it cannot run.
    assert report.backends["reference"][0] is True
    for name, (ok, why) in report.backends.items():
        assert ok or why, f"backend {name} is unavailable without a reason"
    text = str(report)
    assert "torch" in text and "backend reference" in text
    data = report.as_dict()
    json.dumps(data)  # the summary writes it as JSON
    assert data["backends"]["reference"]["available"] is True
    assert "|" in report._repr_markdown_()


def test_package_version_reads_metadata_without_importing():
    assert env.package_version("torch") == torch.__version__.split("+")[0] or \
        env.package_version("torch") == torch.__version__
    assert env.package_version("surely-not-a-real-distribution-xyz") is None


# --------------------------------------------------------------------------- checks
def test_has_package_checks_the_version_spec():
    ok, why = env.has_package("torch", ">=1.0")
    assert ok and why == ""
    ok, why = env.has_package("torch", "<1.0")
    assert not ok and "<1.0" in why and "torch" in why
    ok, why = env.has_package("surely-not-a-real-distribution-xyz")
    assert not ok and "not installed" in why and "pip install" in why


def test_has_module_and_executable():
    assert env.has_module("json") == (True, "")
    ok, why = env.has_module("flashmla.surely_missing_module")
    assert not ok and "flashmla.surely_missing_module" in why
    ok, why = env.has_executable("surely-not-a-command-xyz", "install it")
    assert not ok and "surely-not-a-command-xyz" in why and "install it" in why


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU messages; this machine has a GPU")
def test_gpu_checks_explain_the_missing_gpu():
    ok, why = env.has_cuda_gpu()
    assert not ok and "no CUDA GPU" in why
    ok, why = env.has_hopper_gpu()
    assert not ok and why
    ok, why = env.has_backend("cuda", "cpu")
    assert not ok and "cuda" in why


def test_require_lists_every_problem_and_smoke_waives_hardware():
    with pytest.raises(env.RequirementError) as info:
        env.require((False, "first reason"), (True, ""), (False, "second reason"), smoke=True,
                    packages={"surely-not-a-real-distribution-xyz": ">=1"})
    message = str(info.value)
    assert "first reason" in message and "second reason" in message
    assert "surely-not-a-real-distribution-xyz" in message
    env.require(smoke=True, gpu=True, sm=(9, 0), min_gpu_memory_gib=10_000)  # SMOKE: hardware not enforced
    env.require((True, ""), smoke=False, packages={"torch": ">=1.0"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; this machine has a GPU")
def test_require_gpu_outside_smoke_fails_with_the_fix():
    with pytest.raises(env.RequirementError, match="SMOKE=True"):
        env.require(smoke=False, gpu=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; this machine has a GPU")
def test_resolve_device_never_falls_back_to_cpu_silently():
    assert env.resolve_device("auto", smoke=True) == torch.device("cpu")
    assert env.resolve_device("cpu", smoke=True) == torch.device("cpu")
    with pytest.raises(env.RequirementError, match="SMOKE"):
        env.resolve_device("auto", smoke=False)
    with pytest.raises(env.RequirementError):
        env.resolve_device("cuda", smoke=True)
    with pytest.raises(ValueError, match="DEVICE"):
        env.resolve_device("tpu", smoke=True)


def test_use_triton_interpreter_sets_the_variable_for_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert env.use_triton_interpreter(torch.device("cpu")) is True
    import os

    assert os.environ["TRITON_INTERPRET"] == "1"


def test_disk_free_of_a_path_that_does_not_exist_yet(tmp_path):
    assert env.disk_free_gib(tmp_path / "not" / "yet") > 0


def test_build_extension_without_setup_py_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(env, "_REPO_ROOT", tmp_path)
    ok, why = env.build_extension(tmp_path / "build.log")
    assert not ok and "setup.py" in why


# --------------------------------------------------------------------------- step log
def _record(log):
    return json.loads(log.path.read_text())


def test_steplog_records_ran_skipped_and_results(tmp_path, capsys):
    log = env.StepLog("nb", smoke=True, output_dir=tmp_path, parameters={"SMOKE": True, "SEED": 3})
    with log.step("first") as step:
        assert step.runs and bool(step)
        step.result(error=torch.tensor(0.5), shape=(2, 3))
    with log.step("needs_gpu", needs=[(True, ""), (False, "no GPU here"), (False, "no nvcc")]) as step:
        assert not step.runs
    log.skip("manual", "vLLM is not installed")
    out = capsys.readouterr().out
    assert "[RAN] first" in out
    assert "[SKIPPED] needs_gpu: no GPU here; no nvcc" in out  # every unmet need is named
    assert "[SKIPPED] manual: vLLM is not installed" in out
    data = _record(log)
    assert data["parameters"] == {"SMOKE": True, "SEED": 3} and data["finished"] is False
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["first"]["status"] == "ran" and steps["first"]["results"] == {"error": 0.5, "shape": [2, 3]}
    assert steps["needs_gpu"]["status"] == "skipped" and "no GPU here" in steps["needs_gpu"]["reason"]
    assert log.ran() == ["first"] and set(log.skipped()) == {"needs_gpu", "manual"}
    log.finish()
    assert _record(log)["finished"] is True
    assert "first" in capsys.readouterr().out


def test_steplog_failure_is_recorded_and_propagates(tmp_path):
    log = env.StepLog("nb", smoke=False, output_dir=tmp_path)
    with pytest.raises(AssertionError, match="kernel differs"):
        with log.step("check"):
            assert False, "kernel differs"
    step = _record(log)["steps"][0]
    assert step["status"] == "failed" and "kernel differs" in step["reason"]
    assert log.status("check") == "failed"


def test_steplog_rejects_duplicate_names_and_reasonless_skips(tmp_path):
    log = env.StepLog("nb", smoke=True, output_dir=tmp_path)
    log.skip("a", "because")
    with pytest.raises(ValueError):
        log.skip("a", "again")
    with pytest.raises(ValueError):
        log.skip("b", "")


def test_steplog_saves_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = env.StepLog("nb", smoke=True, output_dir=tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = log.savefig(fig, "line")
    plt.close(fig)
    assert path.exists() and path.stat().st_size > 1000
    assert _record(log)["figures"] == ["nb_line.png"]


def test_run_streaming_echoes_logs_and_returns_the_exit_code(tmp_path, capsys):
    import sys

    rc, tail = env.run_streaming([sys.executable, "-c", "print('hello'); import sys; sys.exit(3)"],
                                 log_path=tmp_path / "log")
    assert rc == 3 and "hello" in tail
    assert "hello" in capsys.readouterr().out and "hello" in (tmp_path / "log").read_text()
    rc, tail = env.run_streaming([sys.executable, "-c", "import time\nprint('start', flush=True)\ntime.sleep(30)"],
                                 timeout=0.5, echo=False)
    assert rc == 124 and "killed" in tail
