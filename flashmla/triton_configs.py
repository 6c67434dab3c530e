"""Block sizes of the Triton MLA decode kernel, per GPU family and per query-row count.

Chosen by measurement (sm90, see benchmarks/results/triton_*) or, where no such GPU was at hand,
by the shared-memory budget of the family; the table is read at launch time, never autotuned
at import, so a first call costs one compile and nothing else.

Key terms (see docs/triton-kernel.md):
  rows       = s_q * h_q / h_kv, the query rows that read one kv head; they are folded into
               tiles of BLOCK_M rows, so each cache block is loaded once per kv head per tile.
  BLOCK_M    = query rows per program (16, 32 or 64). A tile of 64 rows is the Hopper wgmma
               shape; smaller tiles waste less work when h_q is small.
  BLOCK_N    = cache tokens per loop step (a divisor of the 64-token page).
  num_warps, num_stages: Triton launch parameters (warps per program, software-pipeline depth).
  ctas_per_sm: programs the family keeps resident per SM with this entry; the split planner
               uses it to size the grid (it is an estimate, not a launch parameter).

Shared memory per program is about (BLOCK_M + num_stages * BLOCK_N) * 576 * 2 bytes
(the Q tile plus the pipelined cache tiles); each entry stays inside its family's limit
(sm90: 227 KB, sm80: 163 KB, sm86/sm89: 99 KB).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    ctas_per_sm: int

    def smem_bytes(self, element_size: int = 2) -> int:
        return (self.block_m + self.num_stages * self.block_n) * 576 * element_size


# Row buckets: a config applies to rows <= the bucket key (the last bucket covers the rest; rows
# beyond 64 are handled as several 64-row tiles).
ROW_BUCKETS = (16, 32, 64)

CONFIGS: dict[str, dict[int, KernelConfig]] = {
    # Hopper (H100/H200/H20/H800). Measured on an H100 (benchmarks/results/triton_h100_tuning.csv).
    "sm90": {
        16: KernelConfig(block_m=16, block_n=64, num_warps=4, num_stages=2, ctas_per_sm=2),
        32: KernelConfig(block_m=32, block_n=64, num_warps=4, num_stages=2, ctas_per_sm=2),
        64: KernelConfig(block_m=64, block_n=32, num_warps=8, num_stages=2, ctas_per_sm=1),
    },
    # Ampere datacenter (A100/A800/A30: 163 KB shared memory). Not measured: sized to fit.
    "sm80": {
        16: KernelConfig(block_m=16, block_n=32, num_warps=4, num_stages=3, ctas_per_sm=2),
        32: KernelConfig(block_m=32, block_n=32, num_warps=4, num_stages=3, ctas_per_sm=2),
        64: KernelConfig(block_m=64, block_n=32, num_warps=8, num_stages=2, ctas_per_sm=1),
    },
    # Consumer Ampere/Ada and L40S/L4 (99 KB shared memory per program). Not measured: sized to fit.
    "sm86": {
        16: KernelConfig(block_m=16, block_n=32, num_warps=4, num_stages=2, ctas_per_sm=1),
        32: KernelConfig(block_m=32, block_n=16, num_warps=4, num_stages=3, ctas_per_sm=1),
        64: KernelConfig(block_m=32, block_n=16, num_warps=4, num_stages=2, ctas_per_sm=1),
    },
}
# Families not listed (Blackwell, future parts) use the smallest-footprint table.
DEFAULT_FAMILY = "sm86"
# The Triton interpreter (CPU): small tiles keep the numpy work per program low.
INTERPRETER_CONFIG = KernelConfig(block_m=16, block_n=16, num_warps=4, num_stages=1, ctas_per_sm=1)


def family_of(capability: tuple[int, int]) -> str:
    """Map a CUDA compute capability to a key of CONFIGS."""
    major, minor = capability
    if major == 9:
        return "sm90"
    if major == 8 and minor == 0:
        return "sm80"
    if major == 8:
        return "sm86"  # sm86 (A10, 3090), sm87, sm89 (4090, L40S, L4): 99 KB shared memory
    return DEFAULT_FAMILY


def config_for(family: str, rows: int) -> KernelConfig:
    """The table entry for ``rows`` query rows per kv head on a GPU family."""
    table = CONFIGS.get(family, CONFIGS[DEFAULT_FAMILY])
    for bucket in ROW_BUCKETS:
        if rows <= bucket:
            return table[bucket]
    return table[ROW_BUCKETS[-1]]
