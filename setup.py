"""Builds the optional CUDA extension ``flashmla._C`` (the sm90a kernel in csrc/).

Package metadata lives in pyproject.toml; this file only adds ext_modules/cmdclass. The
extension is built when nvcc, a CUDA build of torch and an sm90 GPU are present, or when
FLASHMLA_BUILD_CUDA=1 forces it (e.g. on a GPU-less build box with nvcc); FLASHMLA_BUILD_CUDA=0
turns it off. Without it, `pip install -e .` still works: the Triton and reference backends
need no compilation. Build with `pip install -e . --no-build-isolation` so the extension is
compiled against the torch you have.
"""
import os
import shutil
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def log(msg: str) -> None:
    print(f"[flashmla setup] {msg}", file=sys.stderr, flush=True)


def decide_cuda_build():
    """(build?, reason) from FLASHMLA_BUILD_CUDA and what this machine has."""
    flag = os.environ.get("FLASHMLA_BUILD_CUDA", "").strip()
    if flag == "0":
        return False, "FLASHMLA_BUILD_CUDA=0"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError as exc:
        return False, f"torch is not importable in the build environment ({exc}); use --no-build-isolation"
    nvcc = shutil.which("nvcc") or (os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None)
    if flag == "1":
        if torch.version.cuda is None:
            return False, "FLASHMLA_BUILD_CUDA=1 but torch is a CPU-only build (torch.version.cuda is None)"
        return True, "FLASHMLA_BUILD_CUDA=1"
    if not nvcc or not os.path.exists(nvcc):
        return False, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is CPU-only"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible (set FLASHMLA_BUILD_CUDA=1 to build anyway)"
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    if (9, 0) not in caps:
        return False, f"no sm90 GPU (found {sorted(caps)}; set FLASHMLA_BUILD_CUDA=1 to build anyway)"
    return True, f"nvcc at {nvcc}, torch {torch.__version__} (CUDA {torch.version.cuda}), sm90 GPU present"


def cuda_extension():
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    sources = [os.path.join("csrc", f) for f in (
        "binding.cpp", "mla_launch.cu", "mla_decode_bf16.cu", "mla_decode_fp16.cu",
        "mla_combine.cu", "mla_metadata.cu")]
    nvcc_flags = [
        "-O3", "-std=c++17", "-gencode", "arch=compute_90a,code=sm_90a",
        "--expt-relaxed-constexpr", "-Xptxas", "-v", "-lineinfo",
        "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    ]
    # Extra nvcc flags for instrumented builds, e.g. -DFLASHMLA_SEESAW_TRACE (scripts/seesaw_trace.py).
    nvcc_flags += os.environ.get("FLASHMLA_NVCC_EXTRA", "").split()
    ext = CUDAExtension(
        name="flashmla._C",
        sources=sources,
        include_dirs=[CSRC],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": nvcc_flags},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


build, reason = decide_cuda_build()
if build:
    log(f"building the CUDA extension flashmla._C: {reason}")
    ext_modules, cmdclass = cuda_extension()
else:
    log(f"NOT building the CUDA extension flashmla._C: {reason}; the Triton and reference backends remain")
    ext_modules, cmdclass = [], {}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
