"""The decode profile that the notebooks and scripts/tp_scaling.py read: categories, shares and the
longest kernels (on a CPU, the operators) behind them."""

import pytest

from helpers import assert_no_leaks
from nanoinfer import LLM
from nanoinfer.tools.profiling import category, profile_decode, time_per_kernel


def test_profile_decode_on_a_cpu(tiny_qwen3):
    with LLM(tiny_qwen3, max_model_len=128, max_num_seqs=4) as llm:
        table = profile_decode(llm, num_seqs=3, context_len=20, steps=2, top_kernels=5)
        assert_no_leaks(llm)  # the profiled sequences were aborted and their blocks freed
        assert not llm.scheduler.running and not llm.scheduler.waiting
    assert (table["ms_per_step"] > 0).all() and table["share"].sum() == pytest.approx(1.0)
    assert "GEMM" in table.index and "attention" in table.index
    top = table.attrs["top_kernels"]
    assert 0 < len(top) <= 5
    times = [k["ms_per_step"] for k in top]
    assert times == sorted(times, reverse=True)
    assert all(k["category"] == category(k["name"]) for k in top)
    # the longest operators belong to their categories' totals
    for k in top:
        assert k["ms_per_step"] <= table.loc[k["category"], "ms_per_step"] + 1e-9
    assert table.attrs["num_seqs"] == 3 and table.attrs["wall_ms_per_step"] > 0


def test_categories_of_known_kernel_names():
    assert category("ncclDevKernel_AllGather_RING_LL") == "communication"
    assert category("two_shot_all_reduce_kernel") == "communication"
    assert category("_decode_kernel") == "attention"
    assert category("nvjet_tst_128x64_64x8_2x1_v_bz_TNT") == "GEMM"
    # the project's own Triton kernels (until 2026-11-28 the sampler's and the prologue's fell under "other")
    assert category("_chunk_best_kernel") == category("_pick_chunk_kernel") == "sampling"
    assert category("_qk_prologue_kernel") == "norm / rotary / activation"
    assert category("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::BFloat16, "
                    "at::native::MaxOps<c10::BFloat16>, ...") == "sampling"  # greedy: logits.max
    assert category("void at::native::reduce_kernel<512, 1, SumOps>") == "norm / rotary / activation"
    assert category("CatArrayBatchedCopy_vectorized<...>") == "copies"  # the gathered logits' concat
    assert category("mkldnn::_linear_pointwise") == "GEMM"  # a CPU matmul on packed weights
    assert category("some_new_kernel") == "other"


def test_gpu_time_counts_each_kernel_once():
    """On a GPU an operator launched outside a CUDA graph carries the device time of the kernels it
    launched, and the kernels appear as events of their own: only the kernels count."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device_type, self_device_us, cpu_us=0.0, annotation=False):
        return SimpleNamespace(key=key, device_type=device_type, self_device_time_total=self_device_us,
                               self_cpu_time_total=cpu_us, cpu_time_total=cpu_us, is_user_annotation=annotation)

    events = [
        event("aten::mm", DeviceType.CPU, 400.0, cpu_us=30.0),  # the LM head, eager: its kernel's time
        event("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", DeviceType.CUDA, 400.0),
        event("nccl:all_gather", DeviceType.CPU, 200.0, annotation=True),
        event("nccl:all_gather", DeviceType.CUDA, 240.0, annotation=True),  # its range on the GPU timeline
        event("record_param_comms", DeviceType.CPU, 200.0),
        event("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", DeviceType.CUDA, 200.0),
        event("nanoinfer.prepare", DeviceType.CPU, 0.0, cpu_us=1000.0, annotation=True),
        event("nanoinfer.prepare", DeviceType.CUDA, 900.0, annotation=True),  # (no host time)
    ]
    totals, kernels, host = time_per_kernel(events, steps=2, cuda=True)
    assert totals == {"GEMM": 0.2, "communication": 0.1}
    assert set(kernels) == {events[1].key, events[5].key}
    assert host == {"prepare": 0.5}
    totals, kernels, _ = time_per_kernel(events, steps=2, cuda=False)  # a CPU: operators' own times
    assert totals == {"GEMM": 0.015} and list(kernels) == ["aten::mm"]


def test_profile_workload_schedule_trace_and_cost(tiny_qwen3, tmp_path):
    """wait/warm-up/active: two 20-token prefills timed unprofiled, then three profiled, their FLOPs and bytes from the events; the trace
    is Chrome-trace JSON; decode shows the attention kernels; the requests are gone afterwards"""
    import json

    from nanoinfer.tools.profiling import profile_workload
    from nanoinfer.tools.roofline import ModelCost
    from nanoinfer.tools.workloads import random_workload

    rates = {"bandwidth": 1e10, "matmul_flops": 1e11}
    with LLM(tiny_qwen3, max_model_len=128) as llm:
        work = random_workload(6, (20, 20), (6, 6), llm.engine.hf_config.vocab_size, seed=0)
        table = profile_workload(llm, work, "prefill", trace_dir=str(tmp_path), rates=rates)
        assert_no_leaks(llm)
        a = table.attrs
        assert a["steps"] == 3 and a["tokens_per_step"] == 20 and a["phase"] == "prefill"
        assert a["unprofiled_wall_ms_per_step"] > 0 and a["profiled_wall_ms_per_step"] > 0
        assert (a["flops_per_step"], a["bytes_per_step"]) == ModelCost.of(llm).step(20, [(20, 20)], 1)
        trace = json.loads(open(a["trace_path"]).read())
        assert trace["traceEvents"] and any(e.get("name", "").startswith("aten::") for e in trace["traceEvents"])
        decode = profile_workload(llm, work, "decode", wait=0, warmup=1, active=2, rates=rates)
        assert decode.attrs["tokens_per_step"] == 6  # six sequences, one token each
        assert decode.attrs["unprofiled_wall_ms_per_step"] is None and decode.attrs["profiled_wall_ms_per_step"] > 0
        assert decode.loc["attention", "ms_per_step"] > 0 and "GEMM" in decode.index
        assert_no_leaks(llm)
        assert not llm.scheduler.running and not llm.scheduler.waiting
        with pytest.raises(ValueError, match="the workload has 6"):
            profile_workload(llm, work, "prefill", wait=3, warmup=2, active=2, rates=rates)
        with pytest.raises(ValueError, match="phase"):
            profile_workload(llm, work, "both", rates=rates)
