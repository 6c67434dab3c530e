"""Property tests of the tile scheduler (format: docs/internals.md)."""
import math
import random

import pytest
import torch

from flashmla import scheduler
from flashmla.scheduler import (COL_BEGIN_BLOCK, COL_BEGIN_CHUNK, COL_BEGIN_REQ, COL_END_BLOCK, COL_END_REQ,
                                FIXED_OVERHEAD_BLOCKS, compute_tile_scheduler_metadata, num_sm_parts)


def expand(metadata: torch.Tensor, num_splits: torch.Tensor, seqlens: list[int], overhead=FIXED_OVERHEAD_BLOCKS):
    """Walk the schedule as a kernel would: {(req, block): (part, chunk)} and per-part costs."""
    blocks = [math.ceil(n / 64) for n in seqlens]
    owner, costs, chunk_of = {}, [], {}
    for part, row in enumerate(metadata.tolist()):
        if row[COL_BEGIN_REQ] < 0:
            costs.append(0)
            continue
        cost = 0
        for r in range(row[COL_BEGIN_REQ], row[COL_END_REQ] + 1):
            lo = row[COL_BEGIN_BLOCK] if r == row[COL_BEGIN_REQ] else 0
            hi = row[COL_END_BLOCK] if r == row[COL_END_REQ] else blocks[r]
            if lo >= hi:
                continue
            chunk = row[COL_BEGIN_CHUNK] if r == row[COL_BEGIN_REQ] else 0
            assert (r, chunk) not in chunk_of, f"chunk {chunk} of request {r} written by two parts"
            chunk_of[(r, chunk)] = part
            for blk in range(lo, hi):
                assert (r, blk) not in owner, f"block {blk} of request {r} covered twice"
                owner[(r, blk)] = part
            cost += hi - lo + overhead
        costs.append(cost)
    return owner, costs, chunk_of


def check_schedule(seqlens, rows_per_kv_head=16, h_kv=1, num_sms=132):
    seq = torch.tensor(seqlens, dtype=torch.int32)
    metadata, num_splits = compute_tile_scheduler_metadata(seq, rows_per_kv_head, h_kv, num_sms)
    parts = num_sm_parts(num_sms, rows_per_kv_head, h_kv)
    assert metadata.shape == (parts, 8) and metadata.dtype == torch.int32
    assert num_splits.shape == (len(seqlens) + 1,) and num_splits.dtype == torch.int32
    owner, costs, chunk_of = expand(metadata, num_splits, seqlens)
    blocks = [math.ceil(n / 64) for n in seqlens]
    expected = {(r, k) for r, n in enumerate(blocks) for k in range(n)}
    assert set(owner) == expected, "every block must be covered exactly once"
    splits = num_splits.tolist()
    total = sum(n + FIXED_OVERHEAD_BLOCKS for n in blocks if n)
    assert splits[0] == 0
    for r, n in enumerate(blocks):
        chunks = splits[r + 1] - splits[r]
        assert chunks == (0 if n == 0 else len({c for (rr, c) in chunk_of if rr == r}))
        assert {c for (rr, c) in chunk_of if rr == r} == set(range(chunks)), "chunk ids must be 0..n-1"
    # A column-split schedule (b <= 2, few query rows, short parts) is marked in column 7 of every
    # row and cuts the line into half the parts; the rest stay empty, and the metadata keeps its
    # num_sm_parts rows.
    half = parts // 2
    split = bool(metadata[0, scheduler.COL_COLUMN_SPLIT])
    assert (metadata[:, scheduler.COL_COLUMN_SPLIT] == int(split)).all(), "the mark is the same in every row"
    expect_split = (scheduler.may_split_columns(len(seqlens), len(seqlens) * rows_per_kv_head * h_kv)
                    and half >= 1 and math.ceil(total / max(half, 1)) <= scheduler.COLUMN_SPLIT_MAX_UNITS)
    assert split == expect_split
    used = half if split else parts
    assert half >= 1 or not split, "one part cannot be split"
    assert (metadata[used:, COL_BEGIN_REQ] == -1).all(), "parts past the half in use must be empty"
    # (whole requests per part on equal lengths may take up to the slack beyond the share)
    bound = math.ceil(total / used) + max(FIXED_OVERHEAD_BLOCKS, scheduler.WHOLE_REQUEST_SLACK_BLOCKS) + 1
    assert max(costs) <= bound, f"unbalanced: max part cost {max(costs)} > {bound}"
    assert splits[-1] <= len(seqlens) + parts, "partial slots must fit in b + num_sm_parts"
    return metadata, num_splits


def test_worked_example():
    metadata, num_splits = check_schedule([1000, 64, 5000, 200], num_sms=8)
    assert num_splits.tolist() == [0, 2, 3, 9, 10]


@pytest.mark.parametrize("seed", range(25))
def test_random_batches(seed):
    rng = random.Random(seed)
    b = rng.choice([1, 2, 3, 7, 33, 128, 300])
    seqlens = [rng.choice([0, 0, 1, 63, 64, 65, rng.randint(0, 9000)]) for _ in range(b)]
    rows = rng.choice([1, 16, 64, 65, 128, 256])
    h_kv = rng.choice([1, 2, 8])
    check_schedule(seqlens, rows, h_kv, num_sms=rng.choice([8, 78, 132]))


@pytest.mark.parametrize("seqlens, rows, split", [
    ([4096], 128, True), ([4096, 4096], 128, True), ([4096], 256, True), ([16384], 128, True),  # 8 units
    ([32768], 128, False), ([16384, 16384], 128, False),  # 16 units per half-part: too long
    ([4096, 4096], 256, False), ([4096] * 3, 16, False), ([4096], 257, False)])
def test_column_split_only_for_short_small_batches(seqlens, rows, split):
    """At most COLUMN_SPLIT_MAX_BATCH requests with at most COLUMN_SPLIT_MAX_QUERY_ROWS query rows,
    and at most COLUMN_SPLIT_MAX_UNITS units per part when cut into half the parts: marked and cut
    into half the parts (the metadata keeps all num_sm_parts rows); otherwise every part is used."""
    metadata, _ = check_schedule(seqlens, rows, 1, num_sms=132)
    parts = num_sm_parts(132, rows, 1)
    busy = int((metadata[:, COL_BEGIN_REQ] >= 0).sum())
    assert metadata.shape[0] == parts and bool(metadata[0, scheduler.COL_COLUMN_SPLIT]) is split
    if split:
        assert 0 < busy <= parts // 2
    else:
        assert busy > parts // 2


def test_explicit_column_split():
    """column_split=True splits any batch (half the parts, marked), False none; other values raise."""
    seq = torch.tensor([65536, 100, 0], dtype=torch.int32)
    parts = num_sm_parts(132, 64, 1)
    forced, _ = compute_tile_scheduler_metadata(seq, 64, 1, 132, column_split=True)
    assert (forced[:, scheduler.COL_COLUMN_SPLIT] == 1).all() and (forced[parts // 2:, COL_BEGIN_REQ] == -1).all()
    small = torch.tensor([4096], dtype=torch.int32)
    never, _ = compute_tile_scheduler_metadata(small, 128, 1, 132, column_split=False)
    rule, _ = compute_tile_scheduler_metadata(small, 128, 1, 132)
    assert (never[:, scheduler.COL_COLUMN_SPLIT] == 0).all() and (rule[:, scheduler.COL_COLUMN_SPLIT] == 1).all()
    with pytest.raises(ValueError, match="column_split"):
        compute_tile_scheduler_metadata(small, 128, 1, 132, column_split=2)


def test_all_zero_lengths_mark_every_part_empty():
    metadata, num_splits = check_schedule([0] * 5)
    assert (metadata[:, COL_BEGIN_REQ] == -1).all() and (num_splits == 0).all()


def test_padded_batch_rows_are_untouched():
    """A CUDA-graph batch padded with seqlen-0 requests: no part touches the padding."""
    metadata, num_splits = check_schedule([4096, 100, 0, 0, 0])
    used = metadata[metadata[:, COL_BEGIN_REQ] >= 0]
    assert int(used[:, COL_END_REQ].max()) <= 1
    assert num_splits[2:].tolist() == [int(num_splits[2])] * 4


def test_single_chunk_requests_need_no_combine():
    _, num_splits = check_schedule([64] * 10, num_sms=132)
    assert (num_splits[1:] - num_splits[:-1]).tolist() == [1] * 10


@pytest.mark.parametrize("b", [1, 1000, 100000])
def test_batch_sizes(b):
    rng = random.Random(b)
    seqlens = [rng.randint(0, 4000) for _ in range(b)]
    seq = torch.tensor(seqlens, dtype=torch.int32)
    metadata, num_splits = compute_tile_scheduler_metadata(seq, 128, 1, 132)
    # cheap invariants at large b (the full walk is checked on smaller batches above)
    blocks = (seq.long() + 63) // 64
    used = metadata[:, COL_BEGIN_REQ] >= 0
    g0, g1 = metadata[:, 5].long(), metadata[:, 6].long()
    assert int((g1 - g0).sum()) == int(blocks.sum())
    assert torch.all(g0[1:] == g1[:-1])
    assert used.any()
    chunks = num_splits[1:] - num_splits[:-1]
    assert torch.all((chunks == 0) == (blocks == 0))
    if b <= 1000:
        check_schedule(seqlens, 128, 1, 132)


@pytest.mark.parametrize("rows,h_kv,sms,expected", [
    (16, 1, 132, 132), (64, 1, 132, 132), (65, 1, 132, 66), (128, 1, 132, 66), (256, 1, 132, 33),
    (1024 * 16 // 8, 8, 132, 1),  # FlashMLA issue #28: s_q=1024, h_q=16, h_kv=8 gave 0 parts
    (16, 200, 132, 1),
])
def test_num_sm_parts_never_zero(rows, h_kv, sms, expected):
    assert num_sm_parts(sms, rows, h_kv) == expected


def test_runs_on_the_tensors_device_without_python_loops():
    seq = torch.tensor([5, 6000, 0, 130], dtype=torch.int32)
    m1, n1 = compute_tile_scheduler_metadata(seq, 32, 1, 16)
    m2, n2 = compute_tile_scheduler_metadata(seq.clone(), 32, 1, 16)
    assert torch.equal(m1, m2) and torch.equal(n1, n2), "deterministic"
    assert m1.device == seq.device
    print(scheduler.describe(m1, n1))


# --------------------------------------------------------------------------- optional floor
def test_floor_of_one_is_the_default_schedule():
    seq = torch.tensor([1, 4096, 0, 700, 65], dtype=torch.int32)
    base = compute_tile_scheduler_metadata(seq, 128, 1, 132)
    floored = compute_tile_scheduler_metadata(seq, 128, 1, 132, min_blocks_per_part=1)
    assert torch.equal(base[0], floored[0]) and torch.equal(base[1], floored[1])


@pytest.mark.parametrize("seed", range(20))
def test_floor_properties(seed):
    """With a floor k the schedule is still a valid one (every block once, chunk ids 0..n-1,
    balance bound with P = max(ceil(T/parts), k)), has at most ceil(T / P) non-empty parts, and
    equals the default whenever ceil(T/parts) >= k (large batches are untouched)."""
    rng = random.Random(1000 + seed)
    b = rng.choice([1, 1, 2, 3, 8, 33, 128])
    seqlens = [rng.choice([0, 1, 64, 65, 1000, rng.randint(0, 70000)]) for _ in range(b)]
    rows, h_kv, num_sms = rng.choice([16, 64, 128, 256]), rng.choice([1, 2]), rng.choice([78, 132])
    k = rng.choice([2, 4, 8, 16, 64])
    seq = torch.tensor(seqlens, dtype=torch.int32)
    metadata, num_splits = compute_tile_scheduler_metadata(seq, rows, h_kv, num_sms, min_blocks_per_part=k)
    parts = num_sm_parts(num_sms, rows, h_kv)
    blocks = [math.ceil(n / 64) for n in seqlens]
    owner, costs, chunk_of = expand(metadata, num_splits, seqlens)
    assert set(owner) == {(r, j) for r, n in enumerate(blocks) for j in range(n)}
    splits = num_splits.tolist()
    for r, n in enumerate(blocks):
        ids = {c for (rr, c) in chunk_of if rr == r}
        assert ids == set(range(splits[r + 1] - splits[r])) and (n == 0) == (not ids)
    total = sum(n + FIXED_OVERHEAD_BLOCKS for n in blocks if n)
    per_part = max(math.ceil(total / parts), k, 1)
    assert max(costs) <= per_part + max(FIXED_OVERHEAD_BLOCKS, scheduler.WHOLE_REQUEST_SLACK_BLOCKS) + 1
    nonempty = int((metadata[:, COL_BEGIN_REQ] >= 0).sum())
    assert nonempty <= max(1, math.ceil(total / per_part))
    assert splits[-1] <= len(seqlens) + parts
    if math.ceil(total / parts) >= k:
        base = compute_tile_scheduler_metadata(seq, rows, h_kv, num_sms)
        assert torch.equal(base[0], metadata) and torch.equal(base[1], num_splits)


@pytest.mark.parametrize("k", [2, 4, 5, 8, 16])
def test_floor_at_batch_one_gives_chunks_of_k_blocks(k):
    """b = 1, 4096 tokens (64 blocks): every chunk after the first has k blocks (the last may
    have fewer); the first is shorter by the overhead the line charges before the first block."""
    metadata, num_splits = compute_tile_scheduler_metadata(torch.tensor([4096], dtype=torch.int32), 16, 1, 132,
                                                           min_blocks_per_part=k)
    rows = [r for r in metadata.tolist() if r[COL_BEGIN_REQ] >= 0]
    sizes = [r[COL_END_BLOCK] - r[COL_BEGIN_BLOCK] for r in rows]
    assert sum(sizes) == 64 and int(num_splits[1]) == len(rows)
    assert all(s == k for s in sizes[1:-1]) and 0 < sizes[-1] <= k
    # The first cut past the request's overhead is at ceil(OVERHEAD / k) * k on the line.
    assert sizes[0] == (math.ceil(FIXED_OVERHEAD_BLOCKS / k) * k - FIXED_OVERHEAD_BLOCKS or k)


@pytest.mark.parametrize("overhead", [0, 2, 3, 8])
@pytest.mark.parametrize("seed", range(6))
def test_other_overheads_give_valid_balanced_schedules(overhead, seed):
    """The chunk overhead is an experiment knob (scripts/ab_cuda.py "auto%N"): any value still
    covers every block once with chunk ids 0..n-1, and balances the parts under its own cost
    model (P = ceil(T / parts) with T counted at that overhead)."""
    rng = random.Random(2000 + seed)
    b = rng.choice([2, 33, 128])
    seqlens = [rng.choice([0, 64, 65, 1000, rng.randint(0, 20000)]) for _ in range(b)]
    rows = rng.choice([16, 128, 256])
    seq = torch.tensor(seqlens, dtype=torch.int32)
    metadata, num_splits = compute_tile_scheduler_metadata(seq, rows, 1, 132, overhead_blocks=overhead)
    parts = num_sm_parts(132, rows, 1)
    blocks = [math.ceil(n / 64) for n in seqlens]
    owner, costs, chunk_of = expand(metadata, num_splits, seqlens, overhead)
    assert set(owner) == {(r, j) for r, n in enumerate(blocks) for j in range(n)}
    splits = num_splits.tolist()
    for r, n in enumerate(blocks):
        assert {c for (rr, c) in chunk_of if rr == r} == set(range(splits[r + 1] - splits[r]))
    total = sum(n + overhead for n in blocks if n)
    used = parts // 2 if metadata[0, scheduler.COL_COLUMN_SPLIT] else parts
    assert max(costs) <= math.ceil(total / used) + max(overhead, scheduler.WHOLE_REQUEST_SLACK_BLOCKS) + 1


def test_overhead_rejects_bad_values():
    seq = torch.tensor([100], dtype=torch.int32)
    for bad in (-1, 2.5, 2000):
        with pytest.raises(ValueError, match="overhead_blocks"):
            compute_tile_scheduler_metadata(seq, 16, 1, 132, overhead_blocks=bad)


def test_floor_rejects_bad_values():
    seq = torch.tensor([100], dtype=torch.int32)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="min_blocks_per_part"):
            compute_tile_scheduler_metadata(seq, 16, 1, 132, min_blocks_per_part=bad)


# --------------------------------------------------------------------------- equal-length batches
@pytest.mark.parametrize("b,seqlen,rows,per_part", [
    (128, 4096, 64, 1),    # 128 parts of 69 units instead of 67 + a straddle, one request each
    (128, 4096, 128, 2),   # 66 parts (two row tiles): two whole requests per part
    (128, 8192, 64, 1),
    (128, 8192, 128, 2),   # 266 <= 258 + 12 units
    (100, 1000, 16, 1),
])
def test_equal_lengths_are_cut_at_request_boundaries(b, seqlen, rows, per_part):
    seq = torch.full((b,), seqlen, dtype=torch.int32)
    seq[b // 3] = 0  # an empty (padding) request does not count as a different length
    metadata, num_splits = compute_tile_scheduler_metadata(seq, rows, 1, 132)
    chunks = (num_splits[1:] - num_splits[:-1]).tolist()
    assert all(c == (0 if n == 0 else 1) for c, n in zip(chunks, seq.tolist())), "no request is split"
    used = metadata[metadata[:, COL_BEGIN_REQ] >= 0]
    assert torch.all(used[:, COL_BEGIN_BLOCK] == 0)
    assert torch.all(used[:, COL_END_BLOCK] == (seqlen + 63) // 64)
    requests = (used[:, COL_END_REQ] - used[:, COL_BEGIN_REQ] + 1)
    assert int(requests.max()) <= per_part + 1  # + the empty request it may step over
    check_schedule(seq.tolist(), rows, 1, 132)


@pytest.mark.parametrize("seqlens,rows", [
    ([4096] * 127 + [4160], 64),   # one request a block longer: the balanced schedule
    ([4096] * 200, 64),            # two whole requests per part would cost 138 > 105 + 12 units
    ([8192] * 128, 256),           # four whole requests: 532 > 516 + 12 units
])
def test_whole_requests_only_when_they_cost_no_more(seqlens, rows):
    seq = torch.tensor(seqlens, dtype=torch.int32)
    metadata, num_splits = compute_tile_scheduler_metadata(seq, rows, 1, 132)
    # the balanced line cut (P = ceil(T / parts)) splits requests; whole-request parts would not
    assert int((num_splits[1:] - num_splits[:-1]).max()) >= 2
    parts = num_sm_parts(132, rows, 1)
    assert int((metadata[:, COL_BEGIN_REQ] >= 0).sum()) == parts
    check_schedule(seqlens, rows, 1, 132)
