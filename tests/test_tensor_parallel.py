"""Tensor parallelism on the CPU (gloo): the same tokens and logits as one rank, clean start and stop,
and a clear error when a rank dies."""

import multiprocessing
import time

import pytest

from helpers import (assert_no_leaks, generate_with_logits, kill_a_worker_during_decode, relative_error,
                     run_spawned_ranks)
from nanoinfer import LLM, SamplingParams
from nanoinfer.parallel.workers import WorkerDied

GREEDY = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)




@pytest.fixture(autouse=True)
def no_orphans():
    yield
    deadline = time.time() + 10
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children(), "worker processes were left behind"


@pytest.mark.parametrize("name, tp", [("qwen3", 2), ("llama", 2), ("gemma", 2), ("smollm2", 3)])
def test_tensor_parallel_matches_one_rank(name, tp, reference):
    ref = reference(name)
    # SmolLM2 in three processes on a 2-core machine is slow: fewer prompts and tokens there.
    prompts, n = (ref.prompts[:4], 16) if name == "smollm2" else (ref.prompts, 32)
    params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    with LLM(str(ref.path), max_model_len=256, tensor_parallel_size=tp) as llm:
        tokens, logits = generate_with_logits(llm, prompts, params)
        steps = llm.step_timeline()
        assert steps["comm_bytes"].gt(0).all(), "every step all-reduces"
        assert_no_leaks(llm)
    assert tokens == [t[:n] for t in ref.greedy[: len(prompts)]]
    one = LLM(str(ref.path), max_model_len=256)
    _, logits_one = generate_with_logits(one, prompts, params)
    for seq_id, rows in logits_one.items():
        for a, b in zip(logits[seq_id], rows):
            assert relative_error(a, b) < 1e-5


def test_bad_tensor_parallel_sizes_refused_before_any_process(tiny_llama):
    with pytest.raises(ValueError, match="does not divide the model's 4 attention heads; "
                                         "sizes that fit this model: 1, 2, 4"):
        LLM(str(tiny_llama), tensor_parallel_size=3)
    with pytest.raises(ValueError, match="CPU cores"):
        LLM(str(tiny_llama), tensor_parallel_size=1024)
    assert not multiprocessing.active_children()


def test_dead_rank_raises_quickly_and_nothing_hangs(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), max_model_len=256, tensor_parallel_size=2)
    killed = kill_a_worker_during_decode(llm)
    with pytest.raises(WorkerDied, match=r"rank 1 \(pid \d+\) died"):
        llm.generate([[1, 2, 3]] * 4, SamplingParams(max_tokens=200, ignore_eos=True), use_tqdm=False)
    assert time.time() - killed["at"] < 30
    with pytest.raises(WorkerDied, match="create a new LLM"):
        llm.generate([[1, 2, 3]], use_tqdm=False)
    llm.shutdown()


def test_interrupt_stops_the_group(tiny_llama):
    llm = LLM(str(tiny_llama), max_model_len=256, tensor_parallel_size=2)

    def interrupt(event):
        if event.kind == "forward" and event.step == 3:
            raise KeyboardInterrupt

    llm.events.subscribe(interrupt)
    with pytest.raises(KeyboardInterrupt):
        llm.generate([[5, 6, 7]] * 2, SamplingParams(max_tokens=50), use_tqdm=False)
    assert llm.block_manager.num_free_blocks == llm.block_manager.num_blocks
    assert llm.model_runner.workers.closed


def test_communication_is_measured(tiny_llama):
    with LLM(str(tiny_llama), max_model_len=256, tensor_parallel_size=2, measure_communication=True) as llm:
        llm.generate([[1, 2, 3, 4]] * 3, SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
        steps = llm.step_timeline()
    hidden, layers = 64, 2
    decode = steps[steps.phase == "decode"].iloc[0]
    # two all-reduces per layer of [tokens, hidden] float32, the embedding's, and the logits all-gather
    expected_all_reduce = (2 * layers + 1) * decode.num_tokens * hidden * 4
    assert decode.comm_bytes >= expected_all_reduce and decode.comm_s > 0


def test_workers_run_the_exercises_selected_in_the_caller(tiny_llama, monkeypatch):
    """The workers run the same code as rank 0 (3.1, naive attention, is selected but not called: the
    engine uses the torch backend), and exactly that, whatever NANOINFER_EXERCISES says in their process."""
    from nanoinfer.workbook import registry

    monkeypatch.setattr(registry, "_pinned", None)  # (restored after the test)
    monkeypatch.setenv("NANOINFER_EXERCISES", "2.2")  # the workers inherit it, but take rank 0's selection
    registry.select_exercises("3.1")
    with LLM(tiny_llama, tensor_parallel_size=2) as llm:
        assert llm.model_runner.learner_exercises() == ["3.1"]
        llm.model_runner.workers.call("learner_exercises", reply=True)
        assert llm.model_runner.workers.replies() == [["3.1"]]


def test_row_parallel_layers_alternate_the_shared_all_reduce_buffers(tiny_llama):
    """o_proj and down_proj take the two buffers in turn, so that a result stays valid until the model
    has consumed it, and every rank counts them alike (the slot is not a process-wide counter)."""
    from transformers import AutoConfig

    from nanoinfer.layers.linear import RowParallelLinear
    from nanoinfer.models.llama import LlamaForCausalLM
    from nanoinfer.parallel.peer_memory import alternate_output_slots

    config = AutoConfig.from_pretrained(tiny_llama)
    for _ in range(2):  # a second model in the same process numbers its layers from the start again
        model = LlamaForCausalLM(config)
        alternate_output_slots(model)
        for layer in model.model.layers:
            assert (layer.self_attn.o_proj.output_slot, layer.mlp.down_proj.output_slot) == (0, 1)
        assert sum(isinstance(m, RowParallelLinear) for m in model.modules()) == 2 * len(model.model.layers)


def _set_up_peer_memory(rank: int, port: int, results, tried_before: bool) -> None:
    """One rank of test_a_second_engine_allocates_no_shared_memory (a spawned process, gloo)."""
    import torch
    import torch.distributed as dist

    from nanoinfer.parallel import comm, peer_memory

    allocated = []

    class Recorder:  # stands in for the shared buffers (CUDA only): records that a rank allocated them
        def __init__(self, *args, **kwargs):
            allocated.append(rank)
            raise RuntimeError("no symmetric memory on a CPU")

    peer_memory.PeerMemoryAllReduce = Recorder
    peer_memory._peer_tried_in_this_process = tried_before
    comm.set_tensor_parallel(rank, 2)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        path = peer_memory.enable_peer_all_reduce(torch.device("cpu"), torch.bfloat16)
    finally:
        dist.destroy_process_group()
    results.put((rank, path, bool(allocated)))


@pytest.mark.parametrize("rank0_tried_before", [True, False])
def test_a_second_engine_allocates_no_shared_memory(rank0_tried_before):
    """When the caller (rank 0) already set up peer memory for an earlier engine, no rank allocates the
    shared buffers for this one: a worker must not allocate what rank 0 never will. (Its fresh workers do
    not know about the earlier engine; the ranks agree first.) Otherwise every rank tries."""
    got = run_spawned_ranks(_set_up_peer_memory, 2, lambda rank: (rank == 0 and rank0_tried_before,), timeout=60)
    assert [path for _, path, _ in got] == ["nccl", "nccl"]
    assert [allocated for _, _, allocated in got] == [not rank0_tried_before] * 2


def test_released_cuda_graphs_are_destroyed_even_if_held():
    """Shutting an engine down destroys its CUDA graphs even when the caller still holds the runner (a
    notebook reading its coverage): a graph that captured NCCL calls would keep the process group's
    teardown waiting forever. (Stand-in graphs: a CPU has none.)"""
    import torch

    from nanoinfer.fast.cuda_graphs import CudaGraphRunner
    from nanoinfer.engine.model_runner import ModelRunner

    class Graph:
        destroyed = False

        def reset(self):
            self.destroyed = True

    graphs = CudaGraphRunner(None, None, kv_heads=2, hidden_size=8, max_batch_size=4, max_model_len=32,
                             block_size=16, device=torch.device("cpu"), dtype=torch.float32)
    captured = {size: Graph() for size in graphs.sizes}
    graphs.graphs.update(captured)
    graphs.coverage.replayed_steps = 3
    runner = ModelRunner.__new__(ModelRunner)  # only what release() touches
    runner.graphs, runner.kv_cache, runner.attention_layers, runner.device = graphs, None, [], torch.device("cpu")
    held = runner.graphs
    runner.release()
    assert runner.graphs is None and held.graphs == {}
    assert all(graph.destroyed for graph in captured.values())
    assert held.coverage.replayed_steps == 3  # still readable


def test_ranks_sample_their_own_vocabulary_shards(tmp_path):
    """With the seeded Triton draw (a GPU's sampler; here in Triton's interpreter), each rank samples the
    logits of its vocabulary rows and only one winner per row and rank travels: TP=2 draws TP=1's tokens
    (float32, temperature > 0, seeded and unseeded requests; a vocabulary of 509, so the last shard has a
    padding row), so does TP=2 under a trace (whole rows), and no step gathers the logits."""
    from helpers import make_tiny_checkpoint, TINY_SHAPE

    path = make_tiny_checkpoint("qwen3", tmp_path, vocab_size=509)
    prompts = [[3, 4, 5], [9, 9, 1, 2], [7] * 12]
    params = [SamplingParams(temperature=0.8, max_tokens=10, ignore_eos=True),
              SamplingParams(temperature=1.1, seed=5, max_tokens=10, ignore_eos=True),
              SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)]
    tokens = {}
    for tp, traced in ((1, False), (2, False), (2, True)):
        with LLM(str(path), max_model_len=128, tensor_parallel_size=tp, sampler="triton",
                 measure_communication=True) as llm:
            if traced:
                with llm.trace(logits=True) as trace:
                    outputs = llm.generate(prompts, params, use_tqdm=False)
                assert all(e.data["logits"].shape[1] == 509 for e in trace if e.kind == "sampled")
            else:
                outputs = llm.generate(prompts, params, use_tqdm=False)
                steps = llm.step_timeline() if tp == 2 else None
            tokens[tp, traced] = [o.token_ids for o in outputs]
            assert_no_leaks(llm)
    assert tokens[2, False] == tokens[1, False] == tokens[2, True]
    assert all(t < 509 for row in tokens[2, False] for t in row)
    hidden, layers = TINY_SHAPE["hidden_size"], TINY_SHAPE["num_hidden_layers"]
    decode = steps[steps.phase == "decode"].iloc[0]
    all_reduces = (2 * layers + 1) * decode.num_tokens * hidden * 4
    winners = 2 * 2 * decode.num_tokens * 8  # two ranks' (score, token) float64 pairs
    assert decode.comm_bytes == all_reduces + winners  # the logits (2 x 255 floats a row) never travel


def test_one_tensor_parallel_engine_at_a_time(tiny_llama):
    """While a TP engine lives, building another engine is refused at once; one built before still runs."""
    before = LLM(str(tiny_llama), max_model_len=256)
    expected = [o.token_ids for o in before.generate([[5, 6, 7]], GREEDY, use_tqdm=False)]
    with LLM(str(tiny_llama), max_model_len=256, tensor_parallel_size=2) as tp:
        with pytest.raises(RuntimeError, match="tensor-parallel engine is running in this process"):
            LLM(str(tiny_llama), max_model_len=256)
        assert [o.token_ids for o in before.generate([[5, 6, 7]], GREEDY, use_tqdm=False)] == expected
        assert [o.token_ids for o in tp.generate([[5, 6, 7]], GREEDY, use_tqdm=False)] == expected
    after = LLM(str(tiny_llama), max_model_len=256)  # the group is gone: engines build again
    assert [o.token_ids for o in after.generate([[5, 6, 7]], GREEDY, use_tqdm=False)] == expected
