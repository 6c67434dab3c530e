"""The notebook series: source pairs in sync, committed notebooks stripped, and every notebook
executed end to end with papermill in SMOKE mode on this (CPU) machine, through the same runner
the headless script uses.

The series run happens once per session (module fixture) through ``notebook_runner.main``, so the
exit code, the summary files and each notebook's step record are all checked.
"""
import json
import os
import re
import sys
from pathlib import Path

import pytest

from flashmla import notebook_runner as runner

NOTEBOOK_DIR = runner.NOTEBOOK_DIR
SERIES = runner.SERIES

# Steps that must actually RUN in SMOKE mode on a CPU: the notebook's own hard checks. Anything
# else may be skipped, but only with a reason (checked below).
MUST_RUN_ON_CPU = {
    "00_environment": {"environment_report", "requirements", "backends_match_reference", "model_storage"},
    "01_mla_explained": {"kv_cache_sizes", "weight_absorption", "kernel_computes_mla", "roofline"},
    "02_build_the_kernel": {"schedule_walkthrough", "triton_matches_reference", "gluon_kernel_compiles_for_sm90a"},
    "03_benchmark": {"providers", "run_benchmark", "all_results_match_reference", "plots", "targets",
                     "recorded_h100_run"},
    "04_vllm_backend": {"plugin_declared"},
    "05_deploy_deepseek_v2_lite": {"model_architecture", "kv_cache_budget"},
}


def _tools():
    try:
        import jupytext  # noqa: F401
        import nbformat  # noqa: F401
        import papermill  # noqa: F401
    except ImportError as exc:  # a missing tool is a broken CI setup, not a reason to skip
        pytest.fail(f"the notebook tests need papermill, nbformat and jupytext (requirements/ci.txt): {exc}")


# --------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("name", SERIES)
def test_pair_is_in_sync(name):
    """The .ipynb holds exactly the cells of the jupytext .py source (CI fails when they drift:
    fix with `jupytext --sync notebooks/<name>.py`)."""
    _tools()
    import jupytext
    import nbformat

    source = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    paired = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)

    def cells(nb):
        return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]
    assert cells(source) == cells(paired), (
        f"{name}.py and {name}.ipynb differ; run `jupytext --sync notebooks/{name}.py` (or --to ipynb)")
    assert paired.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    assert paired.metadata["kernelspec"]["name"] == runner.DEFAULT_KERNEL


@pytest.mark.parametrize("name", SERIES)
def test_committed_notebook_is_stripped(name):
    """No outputs, execution counts, papermill or widget state in the committed notebook
    (what `nbstripout --extra-keys "metadata.papermill cell.metadata.papermill"` enforces)."""
    _tools()
    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs"
            assert cell.execution_count is None, f"cell {index} has an execution count"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata, f"cell {index}"
        assert "injected-parameters" not in cell.metadata.get("tags", ()), "an executed notebook was committed"
    for key in ("papermill", "widgets"):
        assert key not in nb.metadata, f"notebook metadata has {key!r}"


@pytest.mark.parametrize("name", SERIES)
def test_notebook_structure(name):
    """What every notebook promises: what you will learn, what it needs, a `parameters` cell
    whose first knob is SMOKE (and which declares OUTPUT_DIR, set by the runner), a step log
    that is finished at the end, and expected H100 numbers."""
    _tools()
    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "What you will learn" in markdown and "What it needs" in markdown
    assert re.search(r"What to expect on an H100", markdown)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = code[0]
    assert "parameters" in params.metadata.get("tags", ()), "the first code cell must be tagged `parameters`"
    first = [line for line in params.source.splitlines() if line.strip() and not line.startswith("#")][0]
    assert re.match(r"SMOKE: bool = False\s+#", first), f"first knob must be `SMOKE: bool = False  # help`: {first!r}"
    assert re.search(r"^OUTPUT_DIR: str = ", params.source, re.M)
    assert all(re.match(r"^[A-Z_]+: \w+ = .+  # .+", line) for line in params.source.splitlines()
               if line.strip()), "every parameter is `NAME: type = value  # help` (papermill --help-notebook)"
    import papermill

    declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    lines = [line for line in params.source.splitlines() if line.strip()]
    assert len(declared) == len(lines), "papermill --help-notebook cannot parse every parameter line"
    assert all(p["help"] for p in declared.values())
    body = "\n".join(c.source for c in code)
    assert f'env.StepLog("{name}"' in body
    assert code[-1].source.strip().startswith("steps.finish()")
    assert "sys.exit" not in body and "allow_errors" not in body


def test_runner_cli_requires_an_explicit_mode():
    with pytest.raises(SystemExit):
        runner.build_parser().parse_args(["--out", "x"])
    args = runner.build_parser().parse_args(["--smoke", "-p", "SEED", "3", "--only", "01"])
    assert args.smoke is True and args.parameter == [["SEED", "3"]]
    assert runner.select_notebooks(["01", "05_deploy_deepseek_v2_lite"]) == ["01_mla_explained",
                                                                             "05_deploy_deepseek_v2_lite"]
    with pytest.raises(ValueError, match="matches no notebook"):
        runner.select_notebooks(["99"])
    with pytest.raises(SystemExit, match="SEEDS"):  # a typo in a parameter name is refused
        runner.main(["--smoke", "--only", "01", "-p", "SEEDS", "3"])
    runner.check_parameter_names({"SEED": 1, "SUITES": ["table"]}, ["01_mla_explained", "03_benchmark"])
    assert runner._parse_value("3") == 3 and runner._parse_value("True") is True
    assert runner._parse_value('["a", 1]') == ["a", 1] and runner._parse_value("cuda") == "cuda"


# --------------------------------------------------------------------------- the runner's checks
def _write_notebook(folder: Path, name: str, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": runner.DEFAULT_KERNEL, "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('SMOKE: bool = False  # x\nOUTPUT_DIR: str = "."  # y')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, folder / f"{name}.ipynb")


def test_runner_catches_silent_exits_errors_and_unfinished_logs(tmp_path):
    """sys.exit(0) makes papermill return success with later cells unrun; an exception fails;
    a notebook that never reaches steps.finish() is not OK either; a clean one is."""
    _tools()
    nb_dir, out = tmp_path / "nbs", tmp_path / "out"
    nb_dir.mkdir()
    log = 'from flashmla import env\nsteps = env.StepLog("{n}", smoke=SMOKE, output_dir=OUTPUT_DIR)'
    _write_notebook(nb_dir, "exits", [log.format(n="exits"), "import sys; sys.exit(0)", "steps.finish()"])
    _write_notebook(nb_dir, "raises", [log.format(n="raises"),
                                       'with steps.step("check"):\n    raise ValueError("mismatch")',
                                       "steps.finish()"])
    _write_notebook(nb_dir, "unfinished", [log.format(n="unfinished"), "x = 1"])
    _write_notebook(nb_dir, "clean", [log.format(n="clean"), 'steps.skip("gpu_step", "no GPU")', "steps.finish()"])
    result = runner.run_series(out, smoke=True, notebooks=["exits", "raises", "unfinished", "clean"],
                               notebook_dir=nb_dir, log_output=False)
    runs = {r.name: r for r in result.runs}
    assert runs["exits"].status == "failed" and "never ran" in runs["exits"].error
    assert len(runs["exits"].unexecuted_cells) == 1  # the last cell (papermill added a parameters cell)
    assert runs["raises"].status == "failed" and "mismatch" in runs["raises"].error
    assert runs["raises"].steps[0]["status"] == "failed"
    assert runs["unfinished"].status == "failed" and "finish" in runs["unfinished"].error
    assert runs["clean"].status == "ok", runs["clean"].error
    assert result.skipped_steps() == [("clean", "gpu_step", "no GPU")]
    assert not result.ok
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and len(summary["runs"]) == 4
    md = (out / "summary.md").read_text()
    assert "FAILED" in md and "clean / gpu_step: no GPU" in md


# --------------------------------------------------------------------------- the series, for real
@pytest.fixture(scope="module")
def smoke_series(tmp_path_factory):
    """Run the whole series once, the way CI and users run it headlessly."""
    _tools()
    out = tmp_path_factory.mktemp("notebooks")
    archive = out.parent / "series.tar.gz"
    rc = runner.main(["--smoke", "--out", str(out), "--quiet", "--timeout", "600", "--archive", str(archive)])
    summary = json.loads((out / "summary.json").read_text())
    return rc, out, summary, archive


def test_series_runs_in_smoke_mode(smoke_series):
    rc, out, summary, archive = smoke_series
    failed = {r["name"]: r["error"] for r in summary["runs"] if r["status"] != "ok"}
    assert not failed, f"notebooks failed: {failed}; see {out}/summary.md"
    assert rc == 0
    assert [r["name"] for r in summary["runs"]] == list(SERIES)
    assert summary["smoke"] is True and summary["parameters"]["SMOKE"] is True
    assert archive.exists() and archive.stat().st_size > 10_000


def test_a_run_can_be_recorded(smoke_series, tmp_path):
    """The archive of a run becomes benchmarks/results/notebooks_<gpu>_<date>/: summary, step
    records, plots; not the executed notebooks."""
    _rc, _out, summary, archive = smoke_series
    dest = runner.record_run(archive, results_root=tmp_path)
    assert dest.name.startswith("notebooks_cpu_") and dest.name.endswith("_smoke")
    names = {p.name for p in dest.rglob("*") if p.is_file()}
    assert {"summary.md", "summary.json"} <= names
    assert {f"{r['name']}.steps.json" for r in summary["runs"]} <= names
    assert not any(n.endswith(".ipynb") for n in names)
    assert "bench.csv" in names


@pytest.mark.parametrize("name", SERIES)
def test_every_code_cell_ran_and_required_steps_ran(smoke_series, name):
    _rc, out, summary, _archive = smoke_series
    run = next(r for r in summary["runs"] if r["name"] == name)
    assert run["status"] == "ok", run["error"]
    assert run["code_cells"] > 3 and run["unexecuted_cells"] == []
    assert run["finished"] is True
    import nbformat

    executed = nbformat.read(out / f"{name}.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    steps = {s["name"]: s for s in run["steps"]}
    missing = MUST_RUN_ON_CPU[name] - {n for n, s in steps.items() if s["status"] == "ran"}
    assert not missing, f"{name}: steps that must run on a CPU did not: " + \
        ", ".join(f"{m} ({steps.get(m, {}).get('status', 'absent')}: {steps.get(m, {}).get('reason', '')})"
                  for m in missing)
    for s in steps.values():
        assert s["status"] in ("ran", "skipped"), s
        if s["status"] == "skipped":
            assert len(s["reason"]) > 10, f"{name}/{s['name']} skipped without a real reason"
    for fig in run["figures"]:
        assert (out / fig).stat().st_size > 1000


def test_recorded_h100_plots_are_labelled_and_kept_apart(smoke_series):
    """In SMOKE mode 03 shows the committed H100 plots: each one under a label naming the recorded
    run's GPU and date (read from its bench_meta.json), and none of them listed as this run's figures."""
    _rc, out, summary, _archive = smoke_series
    import nbformat

    run = next(r for r in summary["runs"] if r["name"] == "03_benchmark")
    recorded = next(s for s in run["steps"] if s["name"] == "recorded_h100_run")
    meta = json.loads((NOTEBOOK_DIR / recorded["results"]["recorded_run"] / "bench_meta.json").read_text())["meta"]
    assert recorded["results"]["gpu"] == meta["gpu"] and recorded["results"]["date"] == meta["date"]
    cell = next(c for c in nbformat.read(out / "03_benchmark.ipynb", as_version=4).cells
                if c.cell_type == "code" and '"recorded_h100_run"' in c.source)
    images = [o for o in cell.outputs if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    labels = [line for o in cell.outputs if o.get("output_type") == "stream"
              for line in o["text"].splitlines() if line.startswith("[recorded ")]
    assert len(images) == len(recorded["results"]["plots"]) >= 1
    assert len(labels) == len(images) and all(meta["gpu"] in line and meta["date"] in line for line in labels)
    assert any("RECORDED run, not this one" in "".join(o.get("data", {}).get("text/markdown", ""))
               for o in cell.outputs if o.get("output_type") == "display_data")
    recorded_dir = NOTEBOOK_DIR / Path(recorded["results"]["recorded_run"])
    recorded_bytes = {(recorded_dir / plot).read_bytes() for plot in recorded["results"]["plots"]}
    assert not any((out / fig).read_bytes() in recorded_bytes for fig in run["figures"]), \
        "a recorded H100 plot was filed as one of this run's figures"


def test_skips_are_shown_in_the_notebook(smoke_series):
    """A skipped step's reason is printed where the reader sees it, not only in the JSON."""
    _rc, out, summary, _archive = smoke_series
    import nbformat

    for run in summary["runs"]:
        text = "\n".join(o.get("text", "") for c in nbformat.read(out / f"{run['name']}.ipynb", as_version=4).cells
                         if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream")
        for s in run["steps"]:
            if s["status"] == "skipped":
                assert f"[SKIPPED] {s['name']}: " in text, (run["name"], s["name"])


def test_script_is_a_thin_entry_point():
    script = (runner.REPO_ROOT / "scripts" / "run_notebooks.py").read_text()
    assert "from flashmla.notebook_runner import main" in script
    assert len(script.splitlines()) < 30
    assert sys.executable  # the kernel "python3" runs with this interpreter (ipykernel's native spec)


def test_environment_for_one_notebook_only(tmp_path):
    """--env NB NAME=VALUE reaches that notebook's kernel and no other; the repository stays on
    PYTHONPATH; bad --env arguments are refused with the reason."""
    _tools()
    nb_dir, out = tmp_path / "nbs", tmp_path / "out"
    nb_dir.mkdir()
    log = 'from flashmla import env\nsteps = env.StepLog("{n}", smoke=SMOKE, output_dir=OUTPUT_DIR)'
    _write_notebook(nb_dir, "nb_a", [log.format(n="nb_a"), 'import os\nassert os.environ["FLASHMLA_T"] == "x=1"',
                                     'assert os.environ["PYTHONPATH"].endswith("/elsewhere")', "steps.finish()"])
    _write_notebook(nb_dir, "nb_b", [log.format(n="nb_b"), 'import os\nassert "FLASHMLA_T" not in os.environ',
                                     "steps.finish()"])
    env = runner._parse_notebook_env([("nb_a", "FLASHMLA_T=x=1"), ("nb_a", "PYTHONPATH=/elsewhere")], ["nb_a", "nb_b"])
    result = runner.run_series(out, smoke=True, notebooks=["nb_a", "nb_b"], notebook_dir=nb_dir, log_output=False,
                               notebook_env=env)
    assert [r.status for r in result.runs] == ["ok", "ok"], [r.error for r in result.runs]
    assert "FLASHMLA_T" not in os.environ
    assert json.loads((out / "summary.json").read_text())["parameters"]["notebook_env"]["nb_a"]["FLASHMLA_T"] == "x=1"
    with pytest.raises(ValueError, match="NAME=VALUE"):
        runner._parse_notebook_env([("nb_a", "novalue")], ["nb_a"])
    with pytest.raises(ValueError, match="no notebook"):
        runner._parse_notebook_env([("09", "A=1")], ["nb_a"])


def test_an_interrupted_series_still_writes_its_summary(tmp_path, monkeypatch):
    """`timeout` (SIGTERM) or Ctrl-C in the middle: the notebooks that ran are reported, the one
    interrupted is failed, the rest are 'not run', and the series is not OK."""
    calls = []

    def fake_run(name, out_dir, params, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return runner.NotebookRun(name=name, status="ok", finished=True)
    monkeypatch.setattr(runner, "run_notebook", fake_run)
    result = runner.run_series(tmp_path, smoke=True, notebooks=list(SERIES[:4]))
    assert [r.status for r in result.runs] == ["ok", "failed", "not run", "not run"]
    assert "interrupted" in result.runs[1].error and not result.ok
    assert json.loads((tmp_path / "summary.json").read_text())["ok"] is False
