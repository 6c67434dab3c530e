"""scripts/ncu_segments.py on the CPU, against the Nsight Compute source-page export that
docs/kernel-design.md 7.20 read (session 17's run 1 of the seesaw kernel, committed xz-compressed)."""
import pathlib
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPORT = ROOT / "benchmarks/results/seesaw_fetch_h100_2026-12-06/run1_src_main.csv.xz"


@pytest.fixture(scope="module")
def ncu_segments():
    return runpy.run_path(str(ROOT / "scripts/ncu_segments.py"))


def test_finds_the_hot_loop_and_cuts_it_at_its_waits(ncu_segments, capsys):
    ncu_segments["main"]([str(EXPORT)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{EXPORT}: hot loop 1617 instructions")
    segments = [line for line in out[1:] if " instr " in line and "ends " in line]
    assert len(segments) > 20
    # The largest wait of 7.20's reading: WG1's wait for the first box of the next B page.
    assert any(line.startswith("c3a90-c3d20") and " 8953 samples" in line for line in segments)


def test_summarises_an_address_range(ncu_segments, capsys):
    ncu_segments["main"]([str(EXPORT), "--range", "c5120", "c6520"])  # WG0's softmax (7.20)
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("c5120-c6520: 192 instructions, 10132 samples, 34 MUFU;")
    assert "no_inst 1445" in out[-1]


def test_refuses_a_file_without_instruction_rows(ncu_segments, tmp_path):
    bad = tmp_path / "empty.csv"
    bad.write_text("not,an,export\n1,2,3\n")
    with pytest.raises((SystemExit, StopIteration)):
        ncu_segments["main"]([str(bad)])
