"""Environment report, requirement checks and the step log every notebook and script uses.

Three small tools, so that no notebook re-invents them:

* ``report()`` collects what decides whether a step can run: Python, torch and its CUDA build,
  the GPU (name, compute capability, SMs, memory, driver), Triton, vLLM, FlashInfer, ModelScope,
  the flashmla version / git commit / whether the CUDA extension is built, and which decode
  backends can run on the chosen device.
* ``require(...)`` and the ``has_*`` checks. A check returns ``(ok, reason)``, the same shape as a
  backend's ``is_available(device)``; ``require`` raises one ``RequirementError`` that lists every
  unmet requirement together with the command that fixes it.
* ``StepLog`` records, for each step of a notebook, whether it ran, was skipped (and why) or
  failed, with its duration and the numbers it produced, and writes that to
  ``<output_dir>/<notebook>.steps.json`` after every change, so a crashed run still leaves a
  record. ``flashmla.notebook_runner`` reads these files to build the series summary.

Nothing here imports vLLM, FlashInfer or the Triton kernel eagerly: versions come from package
metadata, so the report is cheap and cannot fail because an optional package is broken.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

Check = tuple  # (ok: bool, reason: str) -- the shape of a backend's is_available()

#: Packages whose versions the report shows: (distribution name, label).
REPORTED_PACKAGES = (
    ("torch", "torch"),
    ("triton", "triton"),
    ("vllm", "vllm"),
    ("flashinfer-python", "flashinfer"),
    ("numpy", "numpy"),
    ("transformers", "transformers"),
    ("modelscope", "modelscope"),
    ("matplotlib", "matplotlib"),
    ("papermill", "papermill"),
)

_REPO_ROOT = Path(__file__).resolve().parent.parent


class RequirementError(RuntimeError):
    """Raised by ``require`` when the machine cannot run what was asked; the message lists
    every unmet requirement and how to fix it."""


# --------------------------------------------------------------------------- small probes
def package_version(dist_name: str) -> Optional[str]:
    """Installed version of a distribution (e.g. ``"flashinfer-python"``), or None. Does not
    import the package."""
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run_quiet(cmd: Sequence[str], timeout: float = 10.0) -> Optional[str]:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def nvidia_driver_version() -> Optional[str]:
    """The NVIDIA driver version from NVML (nvidia-ml-py) or ``nvidia-smi``; None without one."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML library, no driver, or no GPU: fall back to the CLI
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    out = _run_quiet(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def flashmla_git_commit() -> Optional[str]:
    """Short commit hash of the flashmla checkout (with ``-dirty`` when it has local changes),
    or None when flashmla is not imported from a git checkout."""
    if not (_REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    commit = _run_quiet(["git", "-C", str(_REPO_ROOT), "rev-parse", "--short=12", "HEAD"])
    if commit is None:
        return None
    dirty = _run_quiet(["git", "-C", str(_REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])
    return commit + ("-dirty" if dirty else "")


def cuda_extension_status() -> tuple[bool, str]:
    """(built, where or why not) for the compiled Hopper kernel ``flashmla._C``."""
    spec = importlib.util.find_spec("flashmla._C")
    if spec is None:
        return False, ("flashmla._C is not built: run `pip install -e . --no-build-isolation` "
                       "(or `python setup.py build_ext --inplace`) on a machine with nvcc >= 12.3")
    return True, str(spec.origin)


def build_extension(log_path: Union[str, Path], timeout: float = 3600.0) -> tuple[bool, str]:
    """Compile the Hopper kernel in place (``python setup.py build_ext --inplace``), with the
    whole compiler log in ``log_path``. Returns (built and importable, last lines of the log)."""
    setup = _REPO_ROOT / "setup.py"
    if not setup.exists():
        return False, f"{setup} not found: build from a checkout of the repository"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(setup), "build_ext", "--inplace"]
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            done = subprocess.run(cmd, cwd=_REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)
            returncode = done.returncode
        except subprocess.TimeoutExpired:
            returncode = None
    importlib.invalidate_caches()  # let the import system see the new shared object
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    if returncode is None:
        return False, f"build timed out after {timeout:.0f} s\n{tail}"
    built, detail = cuda_extension_status()
    if returncode != 0 or not built:
        return False, f"build failed (exit {returncode}; {detail})\n{tail}"
    backend = sys.modules.get("flashmla.cuda_backend")
    if backend is not None and getattr(backend, "_C", None) is None:
        importlib.reload(backend)  # it was imported before the build and remembered "not built"
    return True, tail


def run_streaming(cmd: Sequence[str], *, log_path: Optional[Union[str, Path]] = None, timeout: Optional[float] = None,
                  env: Optional[dict] = None, echo: bool = True) -> tuple[int, str]:
    """Run a command in a fresh process, echoing its output as it comes (so a notebook shows
    progress) and keeping it in ``log_path``. Returns (exit code, last 40 lines); exit code 124
    when ``timeout`` seconds pass. Used for steps that must not share the notebook's process,
    e.g. a vLLM engine that would keep 30 GB of GPU memory after the cell ends."""
    import threading

    lines: list[str] = []
    log = open(log_path, "w") if log_path else None
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    timed_out = threading.Event()

    def kill():  # a silent hang must end too, not only one that keeps printing
        timed_out.set()
        proc.kill()
    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer:
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            del lines[:-40]
            if log:
                log.write(line)
            if echo:
                print(line, end="", flush=True)
        returncode = proc.wait()
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if log:
            log.close()
    if timed_out.is_set():
        return 124, "\n".join(lines + [f"(killed after {timeout:.0f} s)"])
    return returncode, "\n".join(lines)


# --------------------------------------------------------------------------- the report
@dataclasses.dataclass
class GPUInfo:
    name: str
    capability: tuple[int, int]
    sm_count: int
    memory_gib: float
    l2_mib: Optional[float]

    @property
    def sm(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclasses.dataclass
class EnvReport:
    """What the machine offers; ``str()`` renders it as an aligned table."""
    python: str
    platform: str
    torch: Optional[str]
    torch_cuda: Optional[str]
    cuda_available: bool
    gpus: list[GPUInfo]
    driver: Optional[str]
    nvcc: Optional[str]
    packages: dict[str, Optional[str]]
    flashmla_version: Optional[str]
    flashmla_commit: Optional[str]
    cuda_extension: tuple[bool, str]
    device: str
    backends: dict[str, tuple[bool, str]]
    env_vars: dict[str, str]

    @property
    def gpu(self) -> Optional[GPUInfo]:
        return self.gpus[0] if self.gpus else None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backends"] = {k: {"available": ok, "reason": why} for k, (ok, why) in self.backends.items()}
        data["cuda_extension"] = {"built": self.cuda_extension[0], "detail": self.cuda_extension[1]}
        return data

    def rows(self) -> list[tuple[str, str]]:
        rows = [("python", f"{self.python} ({self.platform})"),
                ("torch", f"{self.torch} (CUDA build {self.torch_cuda or 'none'})")]
        if self.gpus:
            for i, g in enumerate(self.gpus):
                rows.append((f"gpu {i}", f"{g.name}, {g.sm} (capability {g.capability[0]}.{g.capability[1]}), "
                                         f"{g.sm_count} SMs, {g.memory_gib:.1f} GiB"
                                         + (f", L2 {g.l2_mib:.0f} MiB" if g.l2_mib else "")))
        else:
            rows.append(("gpu", "none visible to torch (torch.cuda.is_available() is False)"))
        rows.append(("driver", self.driver or "none"))
        rows.append(("nvcc", self.nvcc or "not on PATH"))
        for label, version in self.packages.items():
            if label != "torch":
                rows.append((label, version or "not installed"))
        commit = f", commit {self.flashmla_commit}" if self.flashmla_commit else ""
        rows.append(("flashmla", f"{self.flashmla_version}{commit}"))
        built, detail = self.cuda_extension
        rows.append(("flashmla._C", ("built: " if built else "") + detail))
        for name, (ok, why) in self.backends.items():
            rows.append((f"backend {name}", f"available on {self.device}" if ok else f"NOT available: {why}"))
        for key, value in self.env_vars.items():
            rows.append((f"${key}", value))
        return rows

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows())

    def _repr_markdown_(self) -> str:  # rendered as a table in Jupyter
        lines = ["| | |", "|---|---|"]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in self.rows()]
        return "\n".join(lines)


_REPORTED_ENV_VARS = ("FLASHMLA_BACKEND", "TRITON_INTERPRET", "MODELSCOPE_CACHE", "CUDA_VISIBLE_DEVICES",
                      "VLLM_ATTENTION_BACKEND", "HF_HUB_OFFLINE")


def report(device: Union[str, "torch.device", None] = None) -> EnvReport:  # noqa: F821
    """Collect the environment. ``device`` is where backend availability is checked
    (default: ``cuda`` when torch sees a GPU, else ``cpu``)."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            l2 = getattr(props, "L2_cache_size", 0) or 0
            gpus.append(GPUInfo(name=props.name, capability=(props.major, props.minor),
                                sm_count=props.multi_processor_count,
                                memory_gib=props.total_memory / 2**30,
                                l2_mib=l2 / 2**20 if l2 else None))
    nvcc = None
    if shutil.which("nvcc"):
        out = _run_quiet(["nvcc", "--version"])
        if out:
            nvcc = out.splitlines()[-1].strip()
    if device is None:
        device = "cuda" if gpus else "cpu"
    device = torch.device(device)
    try:
        import flashmla

        version = getattr(flashmla, "__version__", None)
        backends = flashmla.backend_status(device)
    except Exception as exc:  # report what we can even when the package is half broken
        version, backends = None, {"(all)": (False, f"import flashmla failed: {exc!r}")}
    return EnvReport(
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        gpus=gpus,
        driver=nvidia_driver_version(),
        nvcc=nvcc,
        packages={label: package_version(dist) for dist, label in REPORTED_PACKAGES},
        flashmla_version=version,
        flashmla_commit=flashmla_git_commit(),
        cuda_extension=cuda_extension_status(),
        device=str(device),
        backends=backends,
        env_vars={k: os.environ[k] for k in _REPORTED_ENV_VARS if k in os.environ},
    )


# --------------------------------------------------------------------------- checks
def has_cuda_gpu(min_capability: Optional[tuple[int, int]] = None,
                 exact_capability: Optional[tuple[int, int]] = None) -> Check:
    """A CUDA GPU visible to torch, optionally with a minimum or exact compute capability."""
    import torch

    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return False, (f"no CUDA GPU: torch {torch.__version__} is a CPU-only build "
                           "(install the CUDA wheel pinned in environment.yml)")
        return False, "no CUDA GPU visible to torch (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    cap = torch.cuda.get_device_capability()
    name = torch.cuda.get_device_name()
    if exact_capability is not None and cap != tuple(exact_capability):
        return False, (f"needs compute capability {exact_capability[0]}.{exact_capability[1]} "
                       f"(Hopper: H100/H800/H200/H20), this GPU is {name} ({cap[0]}.{cap[1]})")
    if min_capability is not None and cap < tuple(min_capability):
        return False, (f"needs compute capability >= {min_capability[0]}.{min_capability[1]}, "
                       f"this GPU is {name} ({cap[0]}.{cap[1]})")
    return True, ""


def has_hopper_gpu() -> Check:
    """An sm_90 GPU (H100, H800, H200, H20): what the CUDA kernel is written for."""
    return has_cuda_gpu(exact_capability=(9, 0))


def has_gpu_memory(min_gib: float) -> Check:
    import torch

    ok, why = has_cuda_gpu()
    if not ok:
        return ok, why
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    if total < min_gib:
        return False, f"needs {min_gib:.0f} GiB of GPU memory, this GPU has {total:.1f} GiB"
    return True, ""


def has_package(dist_name: str, spec: str = "", import_name: Optional[str] = None) -> Check:
    """Distribution ``dist_name`` installed (and matching the PEP 440 ``spec``, e.g. ">=0.26")."""
    version = package_version(dist_name)
    if version is None:
        return False, f"{dist_name} is not installed (pip install '{dist_name}{spec}')"
    if spec:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        if Version(version) not in SpecifierSet(spec):
            return False, f"{dist_name} {version} is installed, but {spec} is needed (pip install '{dist_name}{spec}')"
    if import_name is not None and importlib.util.find_spec(import_name) is None:
        return False, f"{dist_name} {version} is installed but `import {import_name}` cannot find it"
    return True, ""


def has_module(module: str, hint: str = "") -> Check:
    """``import module`` would find it (without importing it)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        found = False
    if not found:
        return False, f"module {module} is not available" + (f" ({hint})" if hint else "")
    return True, ""


def disk_free_gib(path: Union[str, Path]) -> float:
    """Free space on the file system holding ``path`` (its closest existing parent)."""
    p = Path(path).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 2**30


def has_executable(name: str, hint: str = "") -> Check:
    if shutil.which(name) is None:
        return False, f"`{name}` is not on PATH" + (f" ({hint})" if hint else "")
    return True, ""


def has_backend(name: str, device: Union[str, "torch.device"]) -> Check:  # noqa: F821
    """Decode backend ``name`` ("cuda", "triton", "reference") can run on ``device``."""
    import torch

    import flashmla

    status = flashmla.backend_status(torch.device(device))
    if name not in status:
        return False, f"unknown backend {name!r}; known: {sorted(status)}"
    ok, why = status[name]
    return bool(ok), ("" if ok else f"backend {name!r} unavailable on {device}: {why}")


def has_cuda_extension() -> Check:
    return cuda_extension_status()[0], ("" if cuda_extension_status()[0] else cuda_extension_status()[1])


def can_reach(host: str, port: int = 443, timeout: float = 3.0) -> Check:
    """A TCP connection to ``host:port`` opens within ``timeout`` seconds (a cheap "are we
    online" test before a multi-GB download)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"cannot reach {host}:{port} ({exc.__class__.__name__}: {exc}); offline machine?"


def require(*checks: Check, smoke: Optional[bool] = None, gpu: bool = False,
            sm: Optional[tuple[int, int]] = None, packages: Optional[dict[str, str]] = None,
            min_gpu_memory_gib: Optional[float] = None) -> None:
    """Raise ``RequirementError`` listing every unmet requirement.

    Args:
        *checks: extra ``(ok, reason)`` results, e.g. ``has_executable("nvcc")``.
        smoke: the notebook's SMOKE flag. In SMOKE mode the hardware requirements (``gpu``,
            ``sm``, ``min_gpu_memory_gib``) are not enforced: SMOKE runs tiny shapes anywhere.
            Outside SMOKE they are, so a CPU machine never pretends to run the real thing.
        gpu: a CUDA GPU is needed.
        sm: an exact compute capability is needed, e.g. ``(9, 0)`` for Hopper.
        packages: ``{"dist-name": "spec"}``, e.g. ``{"vllm": ">=0.26"}``; always enforced.
        min_gpu_memory_gib: GPU memory needed.
    """
    problems = [why for ok, why in checks if not ok]
    if not smoke:
        if gpu or sm is not None or min_gpu_memory_gib is not None:
            ok, why = has_cuda_gpu(exact_capability=sm)
            if not ok:
                problems.append(why + "; to try the notebook on this machine anyway, run it with "
                                "SMOKE=True (tiny shapes, CPU reference and Triton interpreter)")
            elif min_gpu_memory_gib is not None:
                ok, why = has_gpu_memory(min_gpu_memory_gib)
                if not ok:
                    problems.append(why)
    for dist, spec in (packages or {}).items():
        ok, why = has_package(dist, spec)
        if not ok:
            problems.append(why)
    if problems:
        raise RequirementError("this step cannot run here:\n  - " + "\n  - ".join(problems))


def resolve_device(device: str, smoke: bool) -> "torch.device":  # noqa: F821
    """Turn the notebooks' ``DEVICE`` parameter into a torch device.

    "auto" is the GPU when torch sees one; without a GPU it is the CPU, which is allowed only in
    SMOKE mode (a full-size run on a CPU would take hours and prove nothing about the kernels).
    """
    import torch

    choice = str(device).strip().lower()
    if choice not in ("auto", "cuda", "cpu") and not choice.startswith("cuda:"):
        raise ValueError(f"DEVICE must be 'auto', 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise RequirementError(f"DEVICE={device!r} but {has_cuda_gpu()[1]}; run with SMOKE=True and DEVICE='cpu' "
                               "to try the notebook without a GPU")
    if choice == "cpu" and not smoke:
        raise RequirementError("DEVICE resolved to 'cpu' but SMOKE is False: the full-size steps need a CUDA GPU. "
                               "Set SMOKE=True for the CPU path (tiny shapes, reference + Triton interpreter).")
    return torch.device(choice)


def use_triton_interpreter(device: "torch.device") -> bool:  # noqa: F821
    """On the CPU, run Triton kernels in Triton's interpreter (``TRITON_INTERPRET=1``).

    ``flashmla.triton_decode`` reads the variable when a kernel is first launched, so calling
    this at the top of a notebook is enough. On a GPU the variable is left alone. Returns
    whether the interpreter is on.
    """
    if getattr(device, "type", str(device)) == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- the step log
STATUS_RAN, STATUS_SKIPPED, STATUS_FAILED, STATUS_RUNNING = "ran", "skipped", "failed", "running"


def _jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts pass; tensors and numpy scalars become Python numbers."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


@dataclasses.dataclass
class StepRecord:
    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    results: dict = dataclasses.field(default_factory=dict)


class Step:
    """One step inside ``StepLog.step``; falsy (``runs`` is False) when it was skipped."""

    def __init__(self, log: "StepLog", record: StepRecord):
        self._log = log
        self.record = record

    @property
    def runs(self) -> bool:
        return self.record.status == STATUS_RUNNING

    def __bool__(self) -> bool:
        return self.runs

    def result(self, **values: Any) -> None:
        """Record numbers this step produced (they land in the steps JSON and the summary)."""
        self.record.results.update(_jsonable(values))
        self._log.save()


class StepLog:
    """Record what each notebook step did: ran, skipped (with the reason) or failed.

    Usage in a notebook cell::

        with steps.step("triton_vs_reference", needs=[has_backend("triton", device)]) as step:
            if step.runs:
                ...  # call the package
                step.result(max_abs_err=err)

    When a need is unmet the step is recorded as skipped, the reason is printed where the
    reader sees it, and ``step.runs`` is False. An exception inside the step marks it failed
    and propagates, so papermill stops and the runner reports the notebook as failed. ``finish()``
    at the end of the notebook prints the table and marks the run complete.
    """

    def __init__(self, notebook: str, *, smoke: bool, output_dir: Union[str, Path],
                 parameters: Optional[dict] = None):
        self.notebook = notebook
        self.smoke = bool(smoke)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.parameters = _jsonable(parameters or {})
        self.records: list[StepRecord] = []
        self.figures: list[str] = []
        self.finished = False
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.path = self.output_dir / f"{notebook}.steps.json"
        self.save()

    # -- recording
    def _find(self, name: str) -> Optional[StepRecord]:
        return next((r for r in self.records if r.name == name), None)

    def _new(self, name: str, status: str, reason: str = "") -> StepRecord:
        if not name or self._find(name) is not None:
            raise ValueError(f"step name must be unique and non-empty, got {name!r}")
        record = StepRecord(name=name, status=status, reason=reason)
        self.records.append(record)
        return record

    @contextlib.contextmanager
    def step(self, name: str, *, needs: Iterable[Check] = ()):
        unmet = [why for ok, why in needs if not ok]
        if unmet:
            record = self._new(name, STATUS_SKIPPED, "; ".join(unmet))
            print(f"[SKIPPED] {name}: {record.reason}")
            self.save()
            yield Step(self, record)
            return
        record = self._new(name, STATUS_RUNNING)
        self.save()
        start = time.perf_counter()
        try:
            yield Step(self, record)
        except BaseException as exc:
            record.status = STATUS_FAILED
            record.reason = f"{exc.__class__.__name__}: {exc}"
            record.seconds = time.perf_counter() - start
            print(f"[FAILED] {name} after {record.seconds:.1f} s: {record.reason}")
            self.save()
            raise
        record.status = STATUS_RAN
        record.seconds = time.perf_counter() - start
        print(f"[RAN] {name} in {record.seconds:.2f} s")
        self.save()

    def skip(self, name: str, reason: str) -> None:
        """Record a step that is not run, with the reason (printed too)."""
        if not reason:
            raise ValueError("a skipped step needs a reason")
        self._new(name, STATUS_SKIPPED, reason)
        print(f"[SKIPPED] {name}: {reason}")
        self.save()

    def savefig(self, fig, name: str, *, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``<output_dir>/<notebook>_<name>.png`` and remember it."""
        path = self.output_dir / f"{self.notebook}_{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        self.figures.append(path.name)
        self.save()
        return path

    def add_image(self, path: Union[str, Path], name: str) -> Path:
        """Copy a PNG another tool wrote (e.g. the benchmark's plots) to
        ``<output_dir>/<notebook>_<name>.png`` and remember it, like ``savefig``."""
        target = self.output_dir / f"{self.notebook}_{name}.png"
        if Path(path).resolve() != target.resolve():
            shutil.copyfile(path, target)
        self.figures.append(target.name)
        self.save()
        return target

    # -- queries
    def status(self, name: str) -> Optional[str]:
        record = self._find(name)
        return record.status if record else None

    def ran(self) -> list[str]:
        return [r.name for r in self.records if r.status == STATUS_RAN]

    def skipped(self) -> dict[str, str]:
        return {r.name: r.reason for r in self.records if r.status == STATUS_SKIPPED}

    # -- output
    def as_dict(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "smoke": self.smoke, "parameters": self.parameters,
                "started": self.started, "finished": self.finished, "figures": self.figures,
                "steps": [dataclasses.asdict(r) for r in self.records]}

    def save(self) -> Path:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=False))
        tmp.replace(self.path)
        return self.path

    def table(self) -> str:
        width = max([len(r.name) for r in self.records] + [4])
        lines = [f"{'step':<{width}}  {'status':<8} {'seconds':>8}  reason / results"]
        for r in self.records:
            detail = r.reason or ", ".join(f"{k}={_fmt(v)}" for k, v in r.results.items())
            lines.append(f"{r.name:<{width}}  {r.status:<8} {r.seconds:>8.2f}  {detail}")
        return "\n".join(lines)

    def finish(self) -> dict[str, Any]:
        """Mark the notebook as run to the end, print the step table, return the record."""
        running = [r.name for r in self.records if r.status == STATUS_RUNNING]
        if running:  # only possible if a step's context was left abnormally
            raise RuntimeError(f"steps still marked running at the end: {running}")
        self.finished = True
        self.save()
        print(f"{self.notebook}: {len(self.ran())} steps ran, {len(self.skipped())} skipped"
              f" (SMOKE={self.smoke}); record: {self.path}")
        print(self.table())
        return self.as_dict()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
