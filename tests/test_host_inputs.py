"""The host's per-step work, against plain per-token references: the prefix cache's batched block hashes and its
collision check, a step's flattened inputs (``ModelRunner.host_inputs``), and their trip to the device through
one packed buffer (``device_inputs``; the pinned ring itself on a GPU) or, for a decode step sampled in CUDA graphs,
into the graphs' static buffers (``CudaGraphRunner.sample_step``, with stand-in graphs)."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from nanoinfer.engine.block_manager import BlockManager, compute_block_hash
from nanoinfer.engine.model_runner import ModelRunner
from nanoinfer.engine.scheduler import ScheduledBatch
from nanoinfer.engine.sequence import PENDING_TOKEN, Sequence
from nanoinfer.fast.host import ALIGN, chained_block_hashes, int64_bytes, pack, put_ints, typed_views
from nanoinfer.sampling_params import SamplingParams

TOKEN = st.integers(0, 2**63 - 1)  # any int64 token id, not only a small vocabulary's
PARENT = st.none() | st.integers(0, 2**64 - 1)


def reference_chain(tokens: list[int], block_size: int, parent: int | None) -> list[int]:
    """compute_block_hash over each full block in turn, as Exercise 6.1's reference is called."""
    hashes = []
    for i in range(len(tokens) // block_size):
        parent = compute_block_hash(tokens[i * block_size : (i + 1) * block_size], parent)
        hashes.append(parent)
    return hashes


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(TOKEN | st.integers(0, 50), max_size=300), block_size=st.sampled_from([1, 2, 3, 4, 16, 64]),
       parent=PARENT)
def test_batched_hashes_are_the_reference_bit_for_bit(tokens, block_size, parent):
    full = tokens[: len(tokens) // block_size * block_size]
    assert int64_bytes(full) == np.asarray(full, dtype=np.int64).tobytes()
    assert chained_block_hashes(int64_bytes(full), block_size, parent) == reference_chain(full, block_size, parent)


@given(values=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=200))
def test_put_ints_is_numpys_assignment(values):
    for dtype in (np.int32, np.int64):
        expected = np.zeros(len(values) + 3, dtype)
        expected[: len(values)] = values
        assert (put_ints(np.zeros(len(values) + 3, dtype), values) == expected).all()


def new_seq(seq_id: int, tokens: list[int]) -> Sequence:
    return Sequence(seq_id, tokens, SamplingParams(max_tokens=100))


@settings(max_examples=60, deadline=None)
@given(prompt=st.lists(st.integers(0, 3), min_size=1, max_size=60), extra=st.lists(st.integers(0, 3), max_size=20),
       block_size=st.sampled_from([1, 2, 4, 8]))
def test_a_learners_hash_is_called_once_per_block_as_written(prompt, extra, block_size):
    """Selected learner code (any function but the reference) gets every block's token list and its parent's
    hash, in order, once; the engine keeps exactly what it returned. The reference gives the same hashes."""
    calls = []

    def learner_hash(token_ids, parent_hash):
        calls.append((token_ids, parent_hash))
        return compute_block_hash(token_ids, parent_hash)

    results = []
    for hash_fn in (compute_block_hash, learner_hash):
        bm = BlockManager(num_blocks=64, block_size=block_size)
        bm._hash = hash_fn
        seq = new_seq(0, prompt)
        assert bm.try_allocate(seq)
        bm.publish_full_blocks(seq, seq.num_tokens)
        seq.num_computed_tokens = seq.num_tokens
        for token in extra:  # decode: a block at a time
            seq.token_ids.append(token)
            assert bm.try_reserve(seq, seq.num_tokens)
            bm.publish_full_blocks(seq, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
        results.append(list(seq.block_hashes))
    tokens = prompt + extra
    assert results[0] == results[1] == reference_chain(tokens, block_size, None)
    assert len(calls) == len(results[1])
    assert [t for t, _ in calls] == [tokens[i * block_size : (i + 1) * block_size] for i in range(len(calls))]
    assert all(type(t) is list for t, _ in calls)  # as Sequence.block_token_ids gives them
    assert [p for _, p in calls] == ([None] + results[1])[: len(calls)]


@pytest.mark.parametrize("learner", [False, True])
def test_a_hash_collision_costs_a_recomputation_not_wrong_blocks(learner):
    """Two different blocks under one key: the stored tokens refuse the hit, with the batched reference hash (the
    collision is planted) and with a learner's hash that collides on every block."""
    bm = BlockManager(num_blocks=16, block_size=4)
    if learner:
        bm._hash = lambda token_ids, parent_hash: 42
    a = new_seq(0, [1, 2, 3, 4, 5])
    assert bm.try_allocate(a)
    bm.publish_full_blocks(a, a.num_tokens)
    assert bm.blocks[a.block_table[0]].token_ids == (1, 2, 3, 4)
    b = new_seq(1, [9, 9, 9, 9, 5])
    if not learner:  # plant the collision: b's first block's key names a's block
        bm._block_hashes(b, 1)
        bm.cached_block_ids[b.block_hashes[0]] = a.block_table[0]
    assert bm.try_allocate(b) and b.num_computed_tokens == 0 and b.block_table[0] != a.block_table[0]
    same = new_seq(2, [1, 2, 3, 4, 6])  # a's first block again: a hit
    assert bm.try_allocate(same) and same.block_table[0] == a.block_table[0] and same.num_computed_tokens == 4


def runner(block_size: int, device: str = "cpu") -> ModelRunner:
    """A ModelRunner with only what host_inputs and device_inputs read (no model)."""
    r = ModelRunner.__new__(ModelRunner)
    r.block_size, r.device = block_size, torch.device(device)
    r.staging = None
    if device == "cuda":
        from nanoinfer.fast.host import PinnedStaging

        r.staging = PinnedStaging(r.device)
    return r


@st.composite
def batches(draw):
    """Sequences with tables of distinct blocks, some tokens in the cache, a chunk each to feed (one token each in
    decode), and a pending last token on some (async scheduling)."""
    block_size = draw(st.sampled_from([1, 2, 4, 16]))
    decode = draw(st.booleans())
    seqs, counts, pending_rows, next_block = [], [], {}, 0
    for i in range(draw(st.integers(1, 8))):
        tokens = draw(st.lists(st.integers(0, 1000), min_size=1, max_size=70))
        seq = new_seq(i, tokens)
        computed = len(tokens) - 1 if decode else draw(st.integers(0, len(tokens) - 1))
        n = 1 if decode else draw(st.integers(1, len(tokens) - computed))
        seq.num_computed_tokens = computed
        if computed + n == len(tokens) and draw(st.booleans()):  # its last token still on the device
            seq.token_ids[-1], seq.num_pending_tokens = PENDING_TOKEN, 1
            pending_rows[i] = draw(st.integers(0, 10))
        num_blocks = seq.num_blocks_needed(block_size) + draw(st.integers(0, 2))  # (tables may hold spare blocks)
        seq.block_table = list(range(next_block, next_block + num_blocks))[:: draw(st.sampled_from([1, -1]))]
        next_block += num_blocks
        seqs.append(seq)
        counts.append(n)
    return ScheduledBatch("decode" if decode else "prefill", seqs, counts), pending_rows, block_size


@settings(max_examples=150, deadline=None)
@given(case=batches())
def test_host_inputs_match_a_per_token_reference(case):
    batch, pending_rows, bs = case
    inputs = runner(bs).host_inputs(batch, pending_rows)
    ids, positions, slots, query_start, logits_index, pending_index, pending_row = [], [], [], [0], [], [], []
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        for p in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
            if seq.token_ids[p] == PENDING_TOKEN:
                pending_index.append(len(ids))
                pending_row.append(pending_rows[seq.seq_id])
            ids.append(seq.token_ids[p])
            positions.append(p)
            slots.append(seq.block_table[p // bs] * bs + p % bs)
        query_start.append(len(ids))
        if seq.num_computed_tokens + n == seq.num_tokens:
            logits_index.append(len(ids) - 1)
    for name, values in [("input_ids", ids), ("positions", positions), ("slots", slots)]:
        array = getattr(inputs, name)
        assert array.dtype == np.int64 and array.tolist() == values, name
    width = max(len(s.block_table) for s in batch.seqs)
    assert inputs.block_tables.dtype == np.int32
    assert inputs.block_tables.tolist() == [s.block_table + [0] * (width - len(s.block_table)) for s in batch.seqs]
    assert inputs.query_start == query_start
    assert inputs.query_lens == batch.num_new_tokens
    assert inputs.seq_lens == [s.num_computed_tokens + n for s, n in zip(batch.seqs, batch.num_new_tokens)]
    assert (inputs.logits_index, inputs.pending_index, inputs.pending_row) == (logits_index, pending_index, pending_row)

    input_ids, pos, meta, (logits, p_index, p_row) = runner(bs).device_inputs(inputs)
    for tensor, values, dtype in [(input_ids, ids, torch.int64), (pos, positions, torch.int64),
                                  (meta.slot_mapping, slots, torch.int64), (logits, logits_index, torch.int64),
                                  (p_index, pending_index, torch.int64), (p_row, pending_row, torch.int64),
                                  (meta.query_start_loc, query_start, torch.int32),
                                  (meta.seq_lens, inputs.seq_lens, torch.int32),
                                  (meta.block_tables, inputs.block_tables.tolist(), torch.int32)]:
        assert tensor.dtype == dtype and tensor.tolist() == values
    assert meta.is_decode == (batch.phase == "decode") and meta.max_query_len == max(batch.num_new_tokens)
    assert meta.max_seq_len == max(inputs.seq_lens) and meta.query_lens_cpu == inputs.query_lens


@settings(max_examples=100, deadline=None)
@given(shapes=st.lists(st.tuples(st.sampled_from([np.int64, np.int32]), st.integers(0, 9), st.integers(1, 5)),
                       min_size=1, max_size=10))
def test_packed_arrays_come_back_with_their_dtypes_and_shapes(shapes):
    """What the pinned staging buffer holds, on the CPU: every array at an aligned offset (16 bytes at least),
    read back through typed views of the one buffer (empty arrays and 2-D tables included)."""
    rng = np.random.default_rng(len(shapes))
    arrays = [rng.integers(-(2**31), 2**31, size=(rows, cols) if cols > 1 else rows).astype(dtype)
              for dtype, rows, cols in shapes]
    offsets = pack(arrays)
    assert ALIGN % 16 == 0 and all(o % ALIGN == 0 for o in offsets)
    assert offsets[-1] < sum(a.nbytes for a in arrays) + ALIGN * len(arrays)
    buffer = torch.full((offsets[-1],), 0xAB, dtype=torch.uint8)  # (as PinnedStaging's: a tensor, seen as NumPy)
    pack(arrays, buffer.numpy())
    views = typed_views(buffer, arrays, offsets)
    for a, v in zip(arrays, views):
        assert v.dtype == torch.from_numpy(a).dtype and tuple(v.shape) == a.shape and (v.numpy() == a).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_pinned_staging_ring_on_the_gpu():
    """Steps of growing and shrinking sizes, more of them than the ring has buffers, each read back after later
    steps were staged: no buffer was overwritten while its copy could still run, and device_inputs on the GPU
    gives what it gives on the CPU."""
    from nanoinfer.fast.host import PinnedStaging

    staging = PinnedStaging(torch.device("cuda"), size=2)
    rng = np.random.default_rng(0)
    sent = []
    for step in range(12):
        n = [10, 100_000, 7, 300_000, 1][step % 5]
        tables = rng.integers(0, 2**31 - 1, (3, n % 5 + 1)).astype(np.int32)
        arrays = [rng.integers(0, 2**40, n), tables, np.zeros(0, np.int64)]
        sent.append((arrays, staging.copy(arrays)))
        torch.cuda._sleep(1_000_000)  # keep the stream busy, so that copies are still queued behind it
    for arrays, views in sent:
        for a, v in zip(arrays, views):
            assert v.is_cuda and tuple(v.shape) == a.shape and (v.cpu().numpy() == a).all()

    seqs = [new_seq(i, list(range(5 + 7 * i))) for i in range(3)]
    for i, seq in enumerate(seqs):
        seq.block_table = list(range(10 * i, 10 * i + seq.num_blocks_needed(4)))
    inputs = runner(4).host_inputs(ScheduledBatch("prefill", seqs, [s.num_tokens for s in seqs]))
    on_cpu, on_gpu = runner(4).device_inputs(inputs), runner(4, "cuda").device_inputs(inputs)
    for a, b in [(on_cpu[0], on_gpu[0]), (on_cpu[1], on_gpu[1]), *zip(on_cpu[3], on_gpu[3])]:
        assert b.is_cuda and a.dtype == b.dtype and torch.equal(a, b.cpu())
    for name in ("slot_mapping", "query_start_loc", "seq_lens", "block_tables"):
        a, b = getattr(on_cpu[2], name), getattr(on_gpu[2], name)
        assert a.dtype == b.dtype and torch.equal(a, b.cpu()), name


class _DoneEvent:  # (on a CPU a copy is done when it returns)
    def synchronize(self):
        pass

    def record(self, *args):
        pass


def graph_runner_on_the_cpu(max_batch_size: int, max_model_len: int, block_size: int):
    """A CudaGraphRunner whose recorded graphs are stand-ins for what the real ones do first and last: the forward
    graph takes the pending tokens from ``tokens`` (as _take_pending_kernel), the draw writes input id * 1000 +
    position into ``tokens``."""
    from nanoinfer.fast.cuda_graphs import CudaGraphRunner

    g = CudaGraphRunner(None, None, 1, 4, max_batch_size, max_model_len, block_size, torch.device("cpu"),
                        torch.float32, sample=lambda *args: None, max_sampled_rows=16)
    g.pinned = [torch.zeros(g.static.numel(), dtype=torch.uint8) for _ in range(2)]  # (capture() pins them)
    g.copied = [_DoneEvent(), _DoneEvent()]
    g.host_views = [{name: v.numpy() for name, v in g._views(b).items()} for b in g.pinned]

    class Forward:
        def replay(self):
            rows = g.pending_row >= 0
            g.input_ids[rows] = g.tokens[g.pending_row[rows]]

    class Draw:
        def __init__(self, size):
            self.size = size

        def replay(self):
            g.tokens[: self.size] = g.input_ids[: self.size] * 1000 + g.positions[: self.size]

    for size in g.sizes:
        g.graphs[size], g.sample_graphs[size] = Forward(), Draw(size)
    return g


@settings(max_examples=60, deadline=None)
@given(case=batches(), seed=st.integers(0, 2**16))
def test_a_sampled_graph_step_lands_where_its_graphs_read(case, seed):
    """``CudaGraphRunner.sample_step`` with stand-in graphs: a decode step's arrays and sampling plan reach the static
    buffers (rows past the batch as padding), the pending tokens come from the step before (copied in when that step
    sampled outside the graphs, read in place when it sampled here), and the tokens come back as a view of the graphs'
    buffer. Steps without a sampler plan, and prefill steps, are not taken."""
    from nanoinfer.fast.sampler_triton import SeededDraw

    batch, pending_rows, block_size = case
    g = graph_runner_on_the_cpu(8, 128, block_size)
    inputs = runner(block_size).host_inputs(batch, pending_rows)
    rng, rows = np.random.default_rng(seed), len(batch.seqs)
    previous = torch.from_numpy(rng.integers(0, 50_000, 11))  # (the strategy's pending rows go up to 10)
    assert not g.samples(inputs, previous)  # no plan
    inputs.draw = SeededDraw(rng.random(rows).tolist(), rng.integers(0, 2**62, rows).tolist(), [-1] * rows,
                             [1.0] * rows)
    if batch.phase != "decode":
        assert not g.samples(inputs, previous)
        return
    assert g.samples(inputs, previous)
    tokens = g.sample_step(inputs, previous)
    want_ids = torch.from_numpy(inputs.input_ids.copy())
    want_ids[inputs.pending_index] = previous[inputs.pending_row]
    assert torch.equal(g.input_ids[:rows], want_ids)
    for name, want in (("positions", inputs.positions), ("slot_mapping", inputs.slots), ("seq_lens", inputs.seq_lens),
                       ("temperatures", inputs.draw.temperatures), ("seeds", inputs.draw.seeds)):
        assert torch.equal(getattr(g, name)[:rows], torch.tensor(want, dtype=getattr(g, name).dtype)), name
    width = inputs.block_tables.shape[1]
    assert torch.equal(g.block_tables[:rows, :width], torch.from_numpy(inputs.block_tables))
    assert (g.slot_mapping[rows:] == -1).all() and (g.seq_lens[rows:] == 0).all() and (g.pending_row[rows:] == -1).all()
    assert tokens.data_ptr() == g.tokens.data_ptr()
    assert torch.equal(tokens, want_ids * 1000 + g.positions[:rows])

    # The next step: every row's token pending, in reverse order, read in place from the draw above.
    inputs.pending_index, inputs.pending_row = list(range(rows)), list(range(rows))[::-1]
    want_ids = tokens.flip(0).clone()
    assert g.samples(inputs, tokens)
    g.sample_step(inputs, tokens)
    assert torch.equal(g.input_ids[:rows], want_ids) and g.coverage.sampled_steps == 2
