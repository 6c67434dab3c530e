"""Run the notebook series headlessly with papermill and summarise what ran.

``scripts/run_notebooks.py`` is the command-line face of this module::

    python scripts/run_notebooks.py --smoke --out out/notebooks            # CPU, tiny shapes (CI)
    python scripts/run_notebooks.py --no-smoke --out out/notebooks-h100    # the real thing, on a GPU

Every notebook receives the same parameter names it declares in its ``parameters`` cell
(``SMOKE``, ``OUTPUT_DIR``, plus any ``-p NAME VALUE``), runs with the repository root on
``PYTHONPATH`` so ``import flashmla`` works without installing, and writes into one flat output
folder:

* ``NN_name.ipynb``           the executed notebook (outputs included; never copy it back)
* ``NN_name.steps.json``      what each step did (``flashmla.env.StepLog``)
* ``NN_name_<plot>.png``      every figure the notebook showed
* ``summary.json`` / ``summary.md``  the series: per notebook ran / failed, its steps (ran,
  skipped with the reason, failed), unexecuted code cells, the numbers steps recorded, and
  the environment report.

A notebook counts as OK only if papermill finished it without an error, every code cell has an
execution count (``sys.exit(0)`` in a cell would otherwise pass silently), its step log says it
reached ``finish()`` and no step failed. The exit status is non-zero if any notebook is not OK
(or, with ``--fail-on-skip``, if any step was skipped).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
SERIES = (
    "00_environment",
    "01_mla_explained",
    "02_build_the_kernel",
    "03_benchmark",
    "04_vllm_backend",
    "05_deploy_deepseek_v2_lite",
)
DEFAULT_KERNEL = "python3"

#: What the runner needs on a machine without internet (the GPU host): papermill and the
#: Jupyter kernel machinery, as wheels (``--download-wheels``, 4 MB). Versions are the ones tested
#: (Python 3.11 here, 3.12 on the GPU host). debugpy, jedi and parso, which ipykernel/IPython
#: declare but a headless kernel never imports, are left out (7 MB of the 64 MiB a GPU call carries).
RUNNER_WHEELS = (
    "papermill==2.7.0", "nbclient==0.11.0", "nbformat==5.11.1", "jupyter-client==8.10.0",
    "jupyter-core==5.9.1", "ipykernel==7.4.0", "ipython==8.12.3", "traitlets==5.14.3",
    "pyzmq==27.3.0", "tornado==6.6.1", "comm==0.2.3", "matplotlib-inline==0.2.2",
    "nest-asyncio2==1.7.4", "fastjsonschema==2.22.3", "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0", "rpds-py==0.30.0", "entrypoints==0.4.2", "tenacity==9.2.1", "ansicolors==1.1.8",
    "prompt-toolkit==3.0.52", "wcwidth==0.2.14", "pexpect==4.9.0",
    "ptyprocess==0.7.0", "decorator==5.2.1", "stack-data==0.6.3", "executing==2.2.1", "asttokens==3.0.1",
    "pure-eval==0.2.3", "backcall==0.2.0", "pickleshare==0.7.5", "platformdirs==4.14.7",
)


# --------------------------------------------------------------------------- one notebook
@dataclasses.dataclass
class NotebookRun:
    name: str
    status: str = "not run"  # "ok" | "failed" | "not run"
    seconds: float = 0.0
    error: str = ""
    executed_path: str = ""
    code_cells: int = 0
    unexecuted_cells: list = dataclasses.field(default_factory=list)  # indices of code cells never run
    steps: list = dataclasses.field(default_factory=list)  # from <name>.steps.json
    finished: bool = False  # the notebook reached StepLog.finish()
    figures: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def steps_with(self, status: str) -> list[dict]:
        return [s for s in self.steps if s.get("status") == status]


def unexecuted_code_cells(notebook) -> tuple[int, list[int]]:
    """(number of code cells, indices of code cells without an execution count). Empty cells
    are not counted: Jupyter does not execute them."""
    indices, total = [], 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        total += 1
        if cell.get("execution_count") is None:
            indices.append(index)
    return total, indices


def _first_error(notebook) -> str:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename')}: {output.get('evalue')}"
    return ""


def _write_current_python_kernelspec(folder: Path, name: str) -> Path:
    """A kernelspec ``name`` that starts this very interpreter. Put first on JUPYTER_PATH, it wins
    over any other spec of that name (e.g. a ``python3`` registered for another Python), so the
    notebooks see exactly the packages the runner sees."""
    spec_dir = folder / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (run_notebooks)",
            "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return folder


@contextlib.contextmanager
def _kernel_environment(extra: dict[str, str], kernel_name: Optional[str] = None):
    """Environment for the notebook kernels (they inherit the runner's): the repository on
    PYTHONPATH, a non-interactive matplotlib backend, plus ``extra``; with ``kernel_name``, a
    kernelspec of that name for this interpreter first on JUPYTER_PATH. Restored afterwards."""
    saved = dict(os.environ)
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([path] if path else []))
    tmp = None
    if kernel_name:
        tmp = tempfile.TemporaryDirectory(prefix="flashmla-kernelspec-")
        jupyter_path = os.environ.get("JUPYTER_PATH", "")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [str(_write_current_python_kernelspec(Path(tmp.name), kernel_name))] + ([jupyter_path] if jupyter_path else []))
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules warning, noise in logs
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if tmp is not None:
            tmp.cleanup()


def run_notebook(name: str, out_dir: Path, parameters: dict[str, Any], *, notebook_dir: Path = NOTEBOOK_DIR,
                 kernel_name: str = DEFAULT_KERNEL, execution_timeout: Optional[int] = None,
                 log_output: bool = True) -> NotebookRun:
    """Execute ``notebook_dir/<name>.ipynb`` into ``out_dir/<name>.ipynb`` and collect the record."""
    import nbformat
    import papermill

    run = NotebookRun(name=name)
    source = notebook_dir / f"{name}.ipynb"
    target = out_dir / f"{name}.ipynb"
    run.executed_path = str(target)
    steps_file = out_dir / f"{name}.steps.json"
    if steps_file.exists():
        steps_file.unlink()  # a stale record from an earlier run must not count
    if not source.exists():
        run.status, run.error = "failed", f"{source} does not exist"
        return run
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters=parameters, kernel_name=kernel_name, language="python",
            cwd=str(notebook_dir), progress_bar=False, log_output=log_output,
            execution_timeout=execution_timeout, request_save_on_cell_execute=True)
        run.status = "ok"
    except Exception as exc:  # PapermillExecutionError, timeouts, kernel death: all are failures
        run.status = "failed"
        run.error = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    run.seconds = time.perf_counter() - start

    if target.exists():
        executed = nbformat.read(str(target), as_version=4)
        run.code_cells, run.unexecuted_cells = unexecuted_code_cells(executed)
        if not run.error:
            run.error = _first_error(executed)
    if steps_file.exists():
        record = json.loads(steps_file.read_text())
        run.steps = record.get("steps", [])
        run.finished = bool(record.get("finished"))
        run.figures = record.get("figures", [])

    if run.status == "ok":
        problems = []
        if run.unexecuted_cells:
            problems.append(f"code cells {run.unexecuted_cells} never ran")
        if not run.finished:
            problems.append("the notebook did not reach steps.finish()")
        failed = [s["name"] for s in run.steps_with("failed")]
        if failed:
            problems.append(f"steps failed: {failed}")
        if problems:
            run.status, run.error = "failed", "; ".join(problems)
    return run


# --------------------------------------------------------------------------- the series
@dataclasses.dataclass
class SeriesResult:
    smoke: bool
    out_dir: str
    parameters: dict
    runs: list[NotebookRun]
    started: str
    seconds: float
    environment: dict

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    def skipped_steps(self) -> list[tuple[str, str, str]]:
        return [(r.name, s["name"], s.get("reason", "")) for r in self.runs for s in r.steps_with("skipped")]


def select_notebooks(only: Optional[Iterable[str]] = None) -> list[str]:
    """Series names matching ``only`` (a prefix such as "02" or a full name); all by default."""
    if not only:
        return list(SERIES)
    chosen = []
    for token in only:
        matches = [n for n in SERIES if n == token or n.startswith(token)]
        if not matches:
            raise ValueError(f"--only {token!r} matches no notebook; the series is {list(SERIES)}")
        chosen += [m for m in matches if m not in chosen]
    return [n for n in SERIES if n in chosen]


def declared_parameters(names: Sequence[str], notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, dict]:
    """{notebook: {parameter: papermill's description}} from each notebook's parameters cell."""
    import papermill

    return {n: papermill.inspect_notebook(str(notebook_dir / f"{n}.ipynb")) for n in names}


def check_parameter_names(parameters: dict[str, Any], names: Sequence[str], notebook_dir: Path = NOTEBOOK_DIR) -> None:
    """A ``-p NAME`` that no selected notebook declares is a typo: refuse it rather than let
    papermill inject a variable nobody reads."""
    declared = declared_parameters(names, notebook_dir)
    known = sorted({p for params in declared.values() for p in params})
    unknown = [p for p in parameters if p not in known]
    if unknown:
        raise ValueError(f"parameter(s) {unknown} are not declared by {list(names)}; known: {known}")


def _environment_report() -> dict:
    try:
        from . import env

        return env.report().as_dict()
    except Exception as exc:  # the summary must be written even if the report breaks
        return {"error": repr(exc)}


def run_series(out_dir: Path | str, *, smoke: bool, notebooks: Optional[Sequence[str]] = None,
               parameters: Optional[dict[str, Any]] = None, kernel_name: str = DEFAULT_KERNEL,
               execution_timeout: Optional[int] = None, notebook_dir: Path = NOTEBOOK_DIR,
               log_output: bool = True, stop_on_failure: bool = False,
               kernel_env: Optional[dict[str, str]] = None, use_current_python: bool = True,
               notebook_env: Optional[dict[str, dict[str, str]]] = None) -> SeriesResult:
    """Run the chosen notebooks in order (each on its own: a failure does not stop the rest
    unless ``stop_on_failure``), then write ``summary.json`` and ``summary.md`` into out_dir.

    ``notebook_env`` maps a notebook name to environment variables set for that notebook only
    (for example a PYTHONPATH without a package that must not be seen there); they are recorded
    in the summary's parameters.

    With ``use_current_python`` the kernel ``kernel_name`` is this interpreter (see
    ``_write_current_python_kernelspec``), whatever kernelspecs the machine has registered."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(notebooks) if notebooks else list(SERIES)
    params = {"SMOKE": bool(smoke), "OUTPUT_DIR": str(out_dir)}
    params.update(parameters or {})
    notebook_env = {name: dict(env) for name, env in (notebook_env or {}).items()}
    unknown = sorted(set(notebook_env) - set(names))
    if unknown:
        raise ValueError(f"notebook_env names notebooks that are not run: {unknown} (running {names})")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    runs: list[NotebookRun] = []
    with _kernel_environment(kernel_env or {}, kernel_name if use_current_python else None):
        try:
            for name in names:
                print(f"=== {name} (SMOKE={smoke})", flush=True)
                started_at = time.perf_counter()
                saved_env = dict(os.environ)
                extra = dict(notebook_env.get(name, {}))
                if "PYTHONPATH" in extra:  # the repository stays first, as for the whole series
                    extra["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([extra["PYTHONPATH"]] if extra["PYTHONPATH"] else []))
                os.environ.update(extra)
                try:
                    run = run_notebook(name, out_dir, params, notebook_dir=notebook_dir, kernel_name=kernel_name,
                                       execution_timeout=execution_timeout, log_output=log_output)
                except KeyboardInterrupt:
                    # Ctrl-C or SIGTERM (e.g. `timeout`): keep what ran, say where it stopped.
                    runs.append(NotebookRun(name=name, status="failed", seconds=time.perf_counter() - started_at,
                                            error="interrupted (Ctrl-C or SIGTERM) while running"))
                    raise
                finally:
                    os.environ.clear()
                    os.environ.update(saved_env)
                runs.append(run)
                print(f"=== {name}: {run.status} in {run.seconds:.1f} s"
                      + (f" -- {run.error}" if run.error else ""), flush=True)
                if stop_on_failure and not run.ok:
                    break
        except KeyboardInterrupt:
            print("=== interrupted: writing the summary of what ran", flush=True)
        for name in names[len(runs):]:
            runs.append(NotebookRun(name=name, status="not run", error="the series stopped before this notebook"))
        environment = _environment_report()
    if notebook_env:
        params = dict(params, notebook_env=notebook_env)
    result = SeriesResult(smoke=bool(smoke), out_dir=str(out_dir), parameters=params, runs=runs,
                          started=started, seconds=time.perf_counter() - start, environment=environment)
    write_summary(result, out_dir)
    return result


def summary_markdown(result: SeriesResult) -> str:
    env = result.environment
    gpus = env.get("gpus") or []
    gpu = f"{gpus[0]['name']} (capability {gpus[0]['capability'][0]}.{gpus[0]['capability'][1]})" if gpus else "no GPU"
    pkgs = env.get("packages", {})
    lines = [
        f"# Notebook series run: {'SMOKE (tiny shapes)' if result.smoke else 'full size'}",
        "",
        f"- started {result.started}, {result.seconds:.0f} s in all; result: "
        f"**{'OK' if result.ok else 'FAILED'}**",
        f"- machine: {gpu}; driver {env.get('driver') or 'none'}; python {env.get('python')}; "
        f"torch {env.get('torch')} (CUDA {env.get('torch_cuda') or 'none'}); "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in pkgs.items() if k != "torch"),
        f"- flashmla {env.get('flashmla_version')} commit {env.get('flashmla_commit') or 'unknown'}; "
        f"CUDA extension built: {(env.get('cuda_extension') or {}).get('built')}",
        f"- parameters: `{json.dumps(result.parameters)}`",
        "",
        "| notebook | status | seconds | steps ran | skipped | failed | code cells not run |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in result.runs:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {len(r.steps_with('ran'))} | "
                     f"{len(r.steps_with('skipped'))} | {len(r.steps_with('failed'))} | "
                     f"{r.unexecuted_cells if r.unexecuted_cells else '-'} |")
    for r in result.runs:
        lines += ["", f"## {r.name}: {r.status}"]
        if r.error:
            lines.append(f"- error: `{r.error}`")
        for s in r.steps:
            detail = s.get("reason") or ", ".join(f"{k}={_short(v)}" for k, v in (s.get("results") or {}).items())
            lines.append(f"- **{s['name']}** {s['status']} ({s.get('seconds', 0):.2f} s)" + (f": {detail}" if detail else ""))
        if r.figures:
            lines.append("- figures: " + ", ".join(r.figures))
    skipped = result.skipped_steps()
    if skipped:
        lines += ["", "## Skipped steps and why", ""]
        lines += [f"- {nb} / {step}: {reason}" for nb, step, reason in skipped]
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def write_summary(result: SeriesResult, out_dir: Path) -> tuple[Path, Path]:
    data = dataclasses.asdict(result)
    data["ok"] = result.ok
    json_path = out_dir / "summary.json"
    json_path.write_text(json.dumps(data, indent=2))
    md_path = out_dir / "summary.md"
    md_path.write_text(summary_markdown(result))
    return json_path, md_path


def archive(out_dir: Path, archive_path: Path) -> Path:
    """Pack the output folder into one .tar.gz (the GPU host returns at most a few files)."""
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(out_dir, arcname=out_dir.name)
    return archive_path


RECORDED_PATTERNS = ("summary.md", "summary.json", "*.steps.json", "*.png", "03_bench/bench.md", "03_bench/bench.csv",
                     "03_bench/bench_meta.json", "03_bench/*.png", "05_deploy/deploy_compare.*",
                     "05_deploy/verify_summary.json")


def record_run(source: Path, results_root: Path = REPO_ROOT / "benchmarks" / "results") -> Path:
    """Copy a finished run's summary, step records, plots and benchmark table (not the executed
    notebooks: they are large and never committed) from an output folder or its ``--archive``
    into ``benchmarks/results/notebooks_<gpu>_<date>/``, the record kept in the repository."""
    source = Path(source)
    with tempfile.TemporaryDirectory() as tmp:
        if source.is_file():
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            candidates = [p.parent for p in Path(tmp).rglob("summary.json")]
            if len(candidates) != 1:
                raise ValueError(f"{source}: expected one summary.json in the archive, found {len(candidates)}")
            folder = candidates[0]
        else:
            folder = source
        summary = json.loads((folder / "summary.json").read_text())
        gpus = summary.get("environment", {}).get("gpus") or []
        gpu = gpus[0]["name"] if gpus else "cpu"
        slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
        date = summary.get("started", "")[:10] or _dt.date.today().isoformat()
        names = [r["name"] for r in summary.get("runs", [])]
        part = "" if names == list(SERIES) else "_" + "-".join(n[:2] for n in names)  # a run of some notebooks
        dest = results_root / f"notebooks_{slug}_{date}{part}{'_smoke' if summary.get('smoke') else ''}"
        dest.mkdir(parents=True, exist_ok=True)
        copied = []
        for pattern in RECORDED_PATTERNS:
            for path in sorted(folder.glob(pattern)):
                target = dest / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                copied.append(str(target.relative_to(dest)))
    print(f"recorded {len(copied)} files in {dest}")
    return dest


def download_runner_wheels(dest: Path, python_version: str = "3.12") -> int:
    """Fetch the wheels the runner needs for an offline x86-64 Linux host (``RUNNER_WHEELS``)."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_17_x86_64",
                 "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64", "any"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    return subprocess.call(cmd + list(RUNNER_WHEELS))


# --------------------------------------------------------------------------- command line
def _parse_value(text: str) -> Any:
    """``-p NAME VALUE`` values: JSON when it parses (numbers, lists, true/false), Python's
    True/False/None, else the string itself (papermill's CLI does the same)."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_notebooks.py",
        description="Run the flashmla notebook series headlessly with papermill; write executed notebooks, "
                    "plots and a summary; exit non-zero if a notebook failed.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", dest="smoke", action="store_true",
                      help="SMOKE=True: tiny shapes, CPU torch reference and Triton interpreter where no GPU")
    mode.add_argument("--no-smoke", dest="smoke", action="store_false", help="SMOKE=False: full size, needs a GPU")
    mode.add_argument("--download-wheels", metavar="DIR", type=Path,
                      help="only download the runner's wheels (papermill, ipykernel, ...) for an offline host")
    mode.add_argument("--record", metavar="RUN", type=Path,
                      help="only copy a finished run (its --out folder or --archive) into benchmarks/results/")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "notebooks",
                        help="output folder (default: out/notebooks)")
    parser.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks (prefix like 02 or full name)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra notebook parameter, same name as in the parameters cell (repeatable)")
    parser.add_argument("--kernel", default=DEFAULT_KERNEL,
                        help=f"Jupyter kernel name (default {DEFAULT_KERNEL}); it runs this Python unless --registered-kernel")
    parser.add_argument("--registered-kernel", action="store_true",
                        help="use the machine's registered kernelspec of that name instead of this Python")
    parser.add_argument("--env", nargs=2, action="append", default=[], metavar=("NB", "NAME=VALUE"),
                        help="set an environment variable for one notebook only (repeatable), e.g. "
                             "--env 05 PYTHONPATH=/repo to hide a package from that notebook")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")
    parser.add_argument("--stop-on-failure", action="store_true", help="stop at the first failed notebook")
    parser.add_argument("--fail-on-skip", action="store_true",
                        help="also exit non-zero when any step was skipped (for a GPU host that should run all)")
    parser.add_argument("--archive", type=Path, help="also pack the output folder into this .tar.gz")
    parser.add_argument("--python-version", default="3.12", help="with --download-wheels: target Python (3.12)")
    parser.add_argument("--quiet", action="store_true", help="do not stream cell output to the log")
    parser.add_argument("--list-parameters", action="store_true",
                        help="print every selected notebook's parameters (names, defaults, help) and exit")
    return parser


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    # `timeout` and batch systems stop a run with SIGTERM: treat it like Ctrl-C, so the summary
    # of the notebooks that ran is still written (and archived). Restored afterwards.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parse_notebook_env(pairs: Sequence[Sequence[str]], names: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--env NB NAME=VALUE`` pairs -> {notebook name: {NAME: VALUE}}; NB is a prefix like 05."""
    result: dict[str, dict[str, str]] = {}
    for prefix, assignment in pairs:
        if "=" not in assignment or assignment.startswith("="):
            raise ValueError(f"--env {prefix} {assignment!r}: expected NAME=VALUE")
        matches = [n for n in names if n == prefix or n.startswith(prefix)]
        if len(matches) != 1:
            raise ValueError(f"--env {prefix}: matches {matches or 'no notebook'} of the notebooks run ({list(names)})")
        key, value = assignment.split("=", 1)
        result.setdefault(matches[0], {})[key] = value
    return result


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.download_wheels is not None:
        return download_runner_wheels(args.download_wheels, args.python_version)
    if args.record is not None:
        record_run(args.record)
        return 0
    names = select_notebooks(args.only)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    for reserved in ("SMOKE", "OUTPUT_DIR"):
        if reserved in parameters:
            raise SystemExit(f"-p {reserved} is set by --smoke/--no-smoke and --out; do not pass it")
    if args.list_parameters:
        for nb, params in declared_parameters(names).items():
            print(nb)
            for p in params.values():
                print(f"  {p['name']}: {p['inferred_type_name']} = {p['default']}  # {p['help']}")
        return 0
    try:
        check_parameter_names(parameters, names)
        notebook_env = _parse_notebook_env(args.env, names)
    except ValueError as exc:
        raise SystemExit(str(exc))
    result = run_series(args.out, smoke=args.smoke, notebooks=names, parameters=parameters,
                        kernel_name=args.kernel, execution_timeout=args.timeout,
                        log_output=not args.quiet, stop_on_failure=args.stop_on_failure,
                        use_current_python=not args.registered_kernel, notebook_env=notebook_env)
    if args.archive:
        archive(Path(result.out_dir), args.archive)
    print(summary_markdown(result))
    print(f"summary: {Path(result.out_dir) / 'summary.md'}")
    if not result.ok:
        return 1
    if args.fail_on_skip and result.skipped_steps():
        print(f"--fail-on-skip: {len(result.skipped_steps())} step(s) were skipped")
        return 2
    return 0
