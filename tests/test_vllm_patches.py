"""The legacy file patch for vLLM 0.7.3: version pinned, git apply --check before writing,
already-applied and modified-file cases refused or reported, revert restores the files.

The installed vLLM 0.7.3 files are not shipped; the test rebuilds the part of them the patch
touches from the patch's own context and removed lines (git apply finds hunks at any offset)."""
import ast
import re
import shutil

import pytest

from flashmla.vllm_backend import legacy_patch

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed (needed by git apply)")


def _pre_and_post_images(patch_text):
    """{path: (old text, new text)} made of each hunk's lines, for the modified files."""
    images, path = {}, None
    for block in re.split(r"^diff --git ", patch_text, flags=re.M)[1:]:
        path = block.split()[0][2:]
        old, new = [], []
        in_hunk = False
        for line in block.splitlines():
            if line.startswith("@@"):
                in_hunk = True
                continue
            if not in_hunk:
                continue
            if line.startswith("-"):
                old.append(line[1:])
            elif line.startswith("+"):
                new.append(line[1:])
            else:
                old.append(line[1:])
                new.append(line[1:])
        images[path] = ("\n".join(old) + "\n" if old else None, "\n".join(new) + "\n")
    return images


@pytest.fixture
def fake_site(tmp_path):
    images = _pre_and_post_images(legacy_patch.PATCH.read_text())
    for path, (old, _) in images.items():
        if old is not None and "new file mode" not in path:
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(old)
    info = tmp_path / "vllm-0.7.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.7.3\n")
    return tmp_path, images


def test_patch_touches_only_what_the_tutorial_needs():
    images = _pre_and_post_images(legacy_patch.PATCH.read_text())
    assert set(images) == {"vllm/attention/backends/flashmla_tutorial.py", "vllm/platforms/cuda.py",
                           "vllm/platforms/interface.py"}
    new_module = images["vllm/attention/backends/flashmla_tutorial.py"][1]
    ast.parse(new_module)  # valid Python
    assert "flashmla.flash_mla_with_kvcache" in new_module and "get_mla_metadata" in new_module


def test_apply_check_revert(fake_site):
    site, images = fake_site
    assert "applies cleanly" in legacy_patch.apply(site, check_only=True)
    assert not (site / "vllm/attention/backends/flashmla_tutorial.py").exists()  # --check changed nothing
    assert "patched vLLM 0.7.3" in legacy_patch.apply(site)
    assert "FLASHMLA_TUTORIAL = enum.auto()" in (site / "vllm/platforms/interface.py").read_text()
    assert "flashmla_tutorial" in (site / "vllm/platforms/cuda.py").read_text()
    assert (site / "vllm/attention/backends/flashmla_tutorial.py").exists()
    assert "already applied" in legacy_patch.apply(site)
    assert "reverted" in legacy_patch.apply(site, revert=True)
    assert (site / "vllm/platforms/cuda.py").read_text() == images["vllm/platforms/cuda.py"][0]
    assert not (site / "vllm/attention/backends/flashmla_tutorial.py").exists()


def test_other_versions_are_refused(fake_site):
    site, _ = fake_site
    meta = site / "vllm-0.7.3.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("0.7.3", "0.8.0"))
    with pytest.raises(legacy_patch.PatchRefused, match=r"only for vLLM 0.7.3.*0.8.0.*plugin"):
        legacy_patch.apply(site)
    assert not (site / "vllm/attention/backends/flashmla_tutorial.py").exists()


def test_modified_files_are_refused_and_left_alone(fake_site):
    site, _ = fake_site
    cuda = site / "vllm/platforms/cuda.py"
    edited = cuda.read_text().replace('logger.info("Using Triton MLA backend.")', 'logger.info("edited")')
    cuda.write_text(edited)
    with pytest.raises(legacy_patch.PatchRefused, match="git apply --check"):
        legacy_patch.apply(site)
    assert cuda.read_text() == edited
    assert not (site / "vllm/platforms/interface.py").read_text().count("FLASHMLA_TUTORIAL")


def test_cli_reports_refusal(tmp_path, capsys):
    assert legacy_patch.main(["--site-packages", str(tmp_path)]) == 1
    assert "refused" in capsys.readouterr().err
