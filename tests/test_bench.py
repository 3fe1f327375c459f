"""The benchmark command runs both engines on one workload and reports both (no timing asserted)."""

from nanoinfer.tools.bench import main, random_workload


def test_bench_compares_with_transformers(tiny_llama, capsys):
    record = main(["--model", str(tiny_llama), "--num-requests", "6", "--min-prompt", "4", "--max-prompt", "40",
                   "--min-output", "3", "--max-output", "9"])
    out = capsys.readouterr().out
    assert "nanoinfer /" in out and out.strip().splitlines()[-1].startswith("{")
    ours, peer = record["results"]
    assert ours["requested_tokens"] == peer["requested_tokens"] == record["workload"]["output_tokens"]
    assert peer["generated_tokens"] >= peer["requested_tokens"]  # padding to the longest request
    ratios = record["speedups"][peer["engine"]]
    assert ratios["requested"] > 0 and ratios["generated"] > 0 and record["env"]["date"]
    assert record["roofline"]["tokens_per_s"] > 0 and record["memory"]["num_blocks"] > 0


def test_workload_is_reproducible():
    a = random_workload(8, (5, 20), (3, 7), vocab_size=100, seed=3)
    b = random_workload(8, (5, 20), (3, 7), vocab_size=100, seed=3)
    assert a.prompts == b.prompts and a.output_lens == b.output_lens
    assert all(5 <= len(p) <= 20 for p in a.prompts) and all(3 <= n <= 7 for n in a.output_lens)
