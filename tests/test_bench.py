"""The benchmark: its table agrees with the requests' own timestamps, its counters with the engine's, and the
command runs both engines on one workload and reports both (no timing asserted)."""

import json
import math

import pandas as pd
import pytest

from helpers import assert_no_leaks
from nanoinfer import LLM, bench
from nanoinfer.tools.bench import main
from nanoinfer.tools.workloads import WORKLOADS, named_workload, random_workload


def test_bench_compares_with_transformers(tiny_llama, capsys):
    record = main(["--model", str(tiny_llama), "--num-requests", "6", "--min-prompt", "4", "--max-prompt", "40",
                   "--min-output", "3", "--max-output", "9", "--commit", "abc1234"])
    out = capsys.readouterr().out
    assert "nanoinfer /" in out and out.strip().splitlines()[-1].startswith("{")
    assert "ttft_ms_p99" in out and "tpot_ms_p50" in out  # the latency columns are printed
    ours, peer = record["results"]
    assert ours["requested_tokens"] == peer["requested_tokens"] == record["workload"]["output_tokens"]
    assert peer["generated_tokens"] >= peer["requested_tokens"]  # padding to the longest request
    ratios = record["speedups"][peer["engine"]]
    assert ratios["requested"] > 0 and ratios["generated"] > 0
    assert {k: record[k] for k in ("commit",)} == {"commit": "abc1234"} and record["date"] and record["card"]
    assert record["roofline"]["tokens_per_s"] > 0 and record["memory"]["num_blocks"] > 0
    assert record["roofline"]["decode"]["bound"] in ("memory", "compute")


def quantile(values, q):
    """Linear interpolation between closest ranks, written out (numpy's default method)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def test_percentiles_agree_with_the_requests_timestamps(tiny_llama):
    """TTFT, TPOT and end-to-end percentiles recomputed here from each request's raw timestamps"""
    with LLM(str(tiny_llama), max_model_len=128, max_num_seqs=3) as llm:
        work = random_workload(9, (4, 40), (2, 12), 512, seed=5)
        row = bench.run(work, llm=llm, progress=False)
        assert_no_leaks(llm)
    assert len(pd.concat([row, row])) == 2  # rows of separate runs concatenate (pandas compares their attrs)
    requests = row.attrs["details"].requests
    assert len(requests) == 9 and list(requests.output_tokens) == work.output_lens
    timestamps = row.attrs["details"].metrics
    ttft = [m.first_token_time - m.arrival_time for m in timestamps]
    tpot = [(m.finished_time - m.first_token_time) / (m.num_output_tokens - 1) for m in timestamps]
    e2e = [m.finished_time - m.arrival_time for m in timestamps]
    for name, values in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        for q in (50, 90, 99):
            assert row[f"{name}_ms_p{q}"].iloc[0] == pytest.approx(1e3 * quantile(values, q), rel=1e-9), (name, q)
    assert len(set(ttft)) > 1  # max_num_seqs=3 with 9 requests: later ones wait, the percentiles differ
    assert row.ttft_ms_p50.iloc[0] < row.ttft_ms_p99.iloc[0]


def test_row_counters_are_the_engines(tiny_llama):
    """preemptions, peak blocks, prefix hits and batch widths in the row come from the engine's own counters"""
    with LLM(str(tiny_llama), max_model_len=128, num_kvcache_blocks=12, max_num_seqs=8) as llm:
        work = random_workload(8, (30, 40), (20, 30), 512, seed=1)
        before = llm.cache_stats()["preemptions"]
        row = bench.run(work, llm=llm, progress=False).iloc[0]
        assert row.preemptions == llm.cache_stats()["preemptions"] - before > 0
        assert row.peak_kv_blocks == 12 == row.kv_blocks
        assert row.output_tokens == work.num_output_tokens and row.requests == 8
        steps = row.prefill_steps + row.decode_steps
        assert steps == row.steps and 1 <= row.mean_decode_batch <= 8
        assert row.prefill_share + row.decode_share == pytest.approx(1.0)
        assert_no_leaks(llm)
    with LLM(str(tiny_llama), max_model_len=128) as llm:
        shared = random_workload(6, (64, 64), (2, 2), 512, seed=2, shared_prefix=48)
        row = bench.run(shared, llm=llm, progress=False).iloc[0]
    # the first prompt misses; the other five hit the 48 shared tokens' three full 16-token blocks
    assert row.prefix_hit_rate == pytest.approx(5 * 48 / (6 * 64))


def test_suite_and_sweep_tables(tiny_llama):
    frame = bench.sweep("chatbot", "max_num_seqs", [1, 4], model=str(tiny_llama), scale=1 / 64, progress=False)
    assert list(frame.max_num_seqs) == [1, 4] and list(frame.workload) == ["chatbot"] * 2
    assert frame.mean_decode_batch.iloc[0] == 1 and frame.mean_decode_batch.iloc[1] > 1
    assert frame.steps.iloc[0] > frame.steps.iloc[1]  # one sequence per step takes more steps
    with pytest.raises(ValueError, match="either llm= or model="):
        bench.run("chatbot", llm=object(), max_num_seqs=2)


def test_suite_command_writes_a_record(tiny_llama, tmp_path, capsys):
    out = tmp_path / "suite.json"
    record = main(["--model", str(tiny_llama), "--suite", "--scale", "0.015625", "--json-out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record, default=str))
    rows = pd.DataFrame(record["rows"])
    assert list(rows.workload) == list(bench.SEED_CATEGORIES)
    assert (rows.ttft_ms_p99 >= rows.ttft_ms_p50).all() and (rows.generated_tok_s > 0).all()
    assert "repeated_prefix" in capsys.readouterr().out


def test_workloads_scale_and_repeat():
    a = random_workload(8, (5, 20), (3, 7), vocab_size=100, seed=3)
    b = random_workload(8, (5, 20), (3, 7), vocab_size=100, seed=3)
    assert a.prompts == b.prompts and a.output_lens == b.output_lens
    assert all(5 <= len(p) <= 20 for p in a.prompts) and all(3 <= n <= 7 for n in a.output_lens)
    for name, spec in WORKLOADS.items():
        w = named_workload(name, 1000, scale=1 / 16)
        assert len(w.prompts) == max(2, round(spec.requests / 16))
        assert all(max(4, round(spec.prompt[0] / 16)) <= len(p) <= max(4, round(spec.prompt[1] / 16))
                   for p in w.prompts)
    rep = named_workload("repeated_prefix", 1000, scale=1 / 16)
    assert all(p[:60] == rep.prompts[0][:60] for p in rep.prompts) and rep.prompts[0][60:] != rep.prompts[1][60:]
    with pytest.raises(ValueError, match="scale"):
        named_workload("chatbot", 1000, scale=2)
    with pytest.raises(ValueError, match="unknown workload"):
        named_workload("chat", 1000)
