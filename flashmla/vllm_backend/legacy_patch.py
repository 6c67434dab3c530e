"""The legacy route: patch the files of one pinned old vLLM (0.7.3) instead of loading a plugin.

The 2025 tutorial this project grew from copied modified files over vLLM 0.7.3's site-packages.
vLLM 0.7.3 has no attention-backend registry, so a plugin cannot add a backend there; this keeps
that route for that one version only, done carefully: the installed version must be exactly the
pinned one, and ``git apply --check`` must accept the patch against the installed files before
anything is written. Anything else is refused with the reason. ``revert`` undoes it.

For vLLM >= 0.26 use the plugin (docs/vllm-backend.md); nothing needs patching there.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

PINNED_VERSION = "0.7.3"
PATCH = Path(__file__).resolve().parents[2] / "patches" / f"vllm-{PINNED_VERSION}" / "flashmla-tutorial-backend.patch"


class PatchRefused(RuntimeError):
    """The patch was not applied; the message says why."""


def installed_vllm(site_packages: Optional[Path] = None) -> tuple[str, Path]:
    """(version, the site-packages directory holding the ``vllm`` package)."""
    if site_packages is not None:
        infos = sorted(Path(site_packages).glob("vllm-*.dist-info"))
        if not infos or not (Path(site_packages) / "vllm").is_dir():
            raise PatchRefused(f"no installed vllm package in {site_packages}")
        for line in (infos[0] / "METADATA").read_text().splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip(), Path(site_packages)
        raise PatchRefused(f"{infos[0]} has no Version")
    try:
        dist = importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        raise PatchRefused(f"vLLM is not installed; the legacy patch is for `pip install vllm=={PINNED_VERSION}`") from None
    return dist.version, Path(dist.locate_file(""))


def _git_apply(site: Path, patch: Path, *flags: str) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        raise PatchRefused("git is needed to check and apply the patch (apt-get install git)")
    # --unsafe-paths is not needed: every path in the patch is under vllm/
    return subprocess.run(["git", "apply", "-p1", *flags, str(patch)], cwd=site, capture_output=True, text=True)


def apply(site_packages: Optional[Path] = None, revert: bool = False, check_only: bool = False,
          patch: Path = PATCH) -> str:
    version, site = installed_vllm(site_packages)
    if version != PINNED_VERSION:
        raise PatchRefused(
            f"the legacy patch is only for vLLM {PINNED_VERSION}; the installed vLLM is {version} in {site}. "
            "For vLLM 0.26 and newer nothing needs patching: `pip install -e .` installs flashmla's plugin and "
            "`--attention-backend CUSTOM` selects it (docs/vllm-backend.md).")
    forward = _git_apply(site, patch, "--check")
    backward = _git_apply(site, patch, "--check", "--reverse")
    if revert:
        if backward.returncode != 0:
            raise PatchRefused(f"the patch is not (cleanly) applied in {site}, nothing to revert:\n{backward.stderr}")
        if check_only:
            return f"the patch can be reverted in {site}"
        result = _git_apply(site, patch, "--reverse")
        if result.returncode != 0:
            raise PatchRefused(f"reverting failed:\n{result.stderr}")
        return f"reverted the flashmla patch in {site}"
    if forward.returncode != 0:
        if backward.returncode == 0:
            return f"the flashmla patch is already applied in {site}"
        raise PatchRefused(f"`git apply --check` refuses the patch against the files in {site} (modified by hand or "
                           f"by another patch?); nothing was changed:\n{forward.stderr}")
    if check_only:
        return f"the patch applies cleanly to vLLM {version} in {site}"
    result = _git_apply(site, patch)
    if result.returncode != 0:
        raise PatchRefused(f"applying failed after a clean check:\n{result.stderr}")
    return (f"patched vLLM {version} in {site}. Use it with VLLM_ATTENTION_BACKEND=FLASHMLA_TUTORIAL and "
            "LLM(..., block_size=64, enforce_eager=True); undo with --revert.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=f"Apply flashmla's legacy file patch to vLLM {PINNED_VERSION} (only).")
    p.add_argument("--site-packages", type=Path, help="where vllm is installed (default: the importable one)")
    p.add_argument("--check", action="store_true", help="only check (git apply --check); change nothing")
    p.add_argument("--revert", action="store_true", help="undo the patch")
    args = p.parse_args(argv)
    try:
        print(apply(args.site_packages, revert=args.revert, check_only=args.check))
    except PatchRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
