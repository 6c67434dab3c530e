"""Shared pytest setup: GPU-marked tests are skipped with a visible reason where no GPU is."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    reason = "needs a CUDA GPU: torch.cuda.is_available() is False on this machine (run scripts/gpu_check.sh on a GPU host)"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config):
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"flashmla: GPU {p.name} sm_{p.major}{p.minor}, torch {torch.__version__}"
    return f"flashmla: no GPU; torch {torch.__version__}; GPU-marked tests will be skipped (reason shown with -rs)"
