"""Shared test helpers: tiny random checkpoints and a transformers reference."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=512)


def make_tiny_checkpoint(arch: str, path: Path, seed: int = 0, **overrides) -> Path:
    """Save a tiny random Qwen3, Llama or Gemma with transformers (safetensors, float32) into ``path``.

    Weights are drawn wider than transformers' default (std 0.02) so that logits are peaked and greedy
    decoding has clear winners: a comparison then tests the engine, not float rounding at a near-tie.
    """
    from transformers import (GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen3Config,
                              Qwen3ForCausalLM)

    kwargs = {**TINY_SHAPE, "initializer_range": 0.2, **overrides}
    if arch == "qwen3":
        config, cls = Qwen3Config(**{"head_dim": 32, **kwargs}), Qwen3ForCausalLM
    elif arch == "llama":
        config, cls = LlamaConfig(**kwargs), LlamaForCausalLM
    elif arch == "gemma":  # head size independent of hidden_size / heads, as in the real Gemmas
        config, cls = GemmaConfig(**{"head_dim": 32, **kwargs}), GemmaForCausalLM
    else:
        raise ValueError(arch)
    config.architectures = [cls.__name__]
    torch.manual_seed(seed)
    model = cls(config).to(torch.float32).eval()
    with torch.no_grad():  # norms at random scales and biases nonzero, so that they are exercised
        for name, p in model.named_parameters():
            if "norm" in name:  # (Gemma stores the scale minus one)
                p.uniform_(0.5, 1.5).sub_(1.0 if arch == "gemma" else 0.0)
            elif name.endswith(".bias"):  # (transformers starts biases at zero, where no bias bug shows)
                p.uniform_(-0.5, 0.5)
    model.save_pretrained(path, safe_serialization=True)
    return path


def hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


@torch.no_grad()
def hf_next_token_logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    return [model(torch.tensor([p])).logits[0, -1].float() for p in prompts]


@torch.no_grad()
def hf_greedy(model, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of each prompt, one at a time (no padding), never stopping at EOS.

    A plain argmax loop over transformers' forward with its KV cache: ``generate(min_new_tokens=...)``
    would mask the EOS logit, which is not what ``ignore_eos`` means.
    """
    out = []
    for p in prompts:
        result = model(torch.tensor([p]), use_cache=True)
        tokens = []
        for _ in range(max_new_tokens):
            token = int(result.logits[0, -1].argmax())
            tokens.append(token)
            result = model(torch.tensor([[token]]), past_key_values=result.past_key_values, use_cache=True)
        out.append(tokens)
    return out


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def linear_inputs(rows: int, n: int, k: int, dtype, seed: int, bias: bool, device):
    """x [rows, k], W [n, k] scaled by 1/sqrt(k) and a bias [n] (or None): fresh random values in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if bias else None
    cast = lambda t: None if t is None else t.to(dtype).to(device)  # noqa: E731
    return cast(x), cast(w), cast(b)


def assert_no_leaks(llm) -> None:
    """Every KV block is free and unreferenced once nothing runs."""
    bm = llm.block_manager
    assert not llm.scheduler.has_unfinished()
    assert bm.num_free_blocks == bm.num_blocks, f"{bm.num_blocks - bm.num_free_blocks} KV blocks leaked"
    assert all(b.ref_count == 0 for b in bm.blocks)


def float64_attention(q, k, v, mask, scale):
    """Attention in float64 with grouped-query heads expanded: the reference for attention exercises."""
    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, dim=1)
    v = v.double().repeat_interleave(group, dim=1)
    scores = (q.double() @ k.transpose(-1, -2)) * scale
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


def generate_with_logits(llm, prompts, params):
    """Token ids per prompt and, per prompt (0, 1, ...), the logits of every token it sampled."""
    with llm.trace(logits=True) as trace:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    first = outputs[0].request_id
    logits: dict[int, list] = {}
    for event in trace:
        if event.kind == "sampled":
            for row, seq_id in enumerate(event.data["seq_ids"]):
                logits.setdefault(seq_id - first, []).append(event.data["logits"][row].float().cpu())
    return [o.token_ids for o in outputs], logits


def mean_error_to_reference(tokens, logits, ref_tokens, ref_logits, first_step_only=False):
    """Mean relative error of the logits to a reference run's, over each prompt's steps up to and
    including the first token that differs (after it the contexts part), or over the first steps only."""
    errors = []
    for i, (got, want) in enumerate(zip(tokens, ref_tokens)):
        for k, (a, b) in enumerate(zip(got, want)):
            errors.append(relative_error(logits[i][k], ref_logits[i][k]))
            if a != b or first_step_only:
                break
    return sum(errors) / len(errors)


# Every process of the child's engine prints its stacks at one deadline (workers 4 s before the child,
# which then ends and so ends them): spawned workers import the child's main module too, as
# "__mp_main__", and inherit the deadline through the environment. faulthandler's timer needs no
# interpreter lock, so it fires even while a main thread is stuck in C. The child also dies with pytest.
_CHILD_PROLOGUE = """import faulthandler, os, sys, time
sys.path.insert(0, {tests!r})
_main = __name__ == "__main__"
if _main and sys.platform.startswith("linux"):
    import ctypes, signal
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the test process
_left = float(os.environ["NANOINFER_TEST_DEADLINE"]) - time.time() - (0 if _main else 4)
faulthandler.dump_traceback_later(max(_left, 1), exit=_main)
"""


def run_in_child(source: str, *args, timeout: float = 300) -> dict:
    """Run the Python ``source`` in a fresh interpreter (the tests folder importable, ``args`` in
    sys.argv[1:]) and return the JSON object it printed on its last line that starts with "RESULT ".

    The GPU tests run each tensor-parallel engine this way: PyTorch sets up peer memory once per process,
    so each engine gets a process of its own; and a hang becomes a failure that shows where every thread
    of the child was (faulthandler), instead of stopping the suite."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    prologue = _CHILD_PROLOGUE.format(tests=str(Path(__file__).parent))
    deadline = time.time() + max(timeout - 30, 10)  # (then the stacks; at the timeout, SIGKILL)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(prologue + source)
    # (a session of its own, so that the child and its engine's workers can be killed together)
    child = subprocess.Popen([sys.executable, script.name, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "NANOINFER_TEST_DEADLINE": str(deadline)})
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        raise AssertionError(f"the child ran past {timeout} s\n{out[-3000:]}\n{err[-6000:]}") from None
    except BaseException:  # Ctrl-C: the child and its workers go too
        os.killpg(child.pid, signal.SIGKILL)
        raise
    finally:
        os.unlink(script.name)
    results = [line[len("RESULT "):] for line in out.splitlines() if line.startswith("RESULT ")]
    assert child.returncode == 0 and results, f"the child exited with {child.returncode}\n{out[-3000:]}\n{err[-6000:]}"
    return json.loads(results[-1])


def run_spawned_ranks(target, size: int, args=lambda rank: (), timeout: float = 120) -> list:
    """Run ``target(rank, port, results, *args(rank))`` in ``size`` spawned processes (``port``: a free one
    for their process group) and return what they put on ``results``, sorted; stop them all in any case."""
    import multiprocessing

    from nanoinfer.parallel.workers import free_port

    ctx = multiprocessing.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=target, args=(rank, port, results, *args(rank))) for rank in range(size)]
    try:
        for p in procs:
            p.start()
        return sorted(results.get(timeout=timeout) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def kill_a_worker_during_decode(llm, step: int = 5) -> dict:
    """SIGKILL tensor-parallel rank 1 when the engine schedules a decode at ``step``; the returned dict
    gets the kill time under "at"."""
    import os
    import signal
    import time

    victim = llm.model_runner.workers.procs[0]
    killed: dict = {}

    def kill(event):
        if event.kind == "decode_step" and event.step == step and not killed:
            killed["at"] = time.time()
            os.kill(victim.pid, signal.SIGKILL)

    llm.events.subscribe(kill)
    return killed


def tp2_and_one_rank_tokens(tmp_path: Path, build_context) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy tokens of random prompts from a TP=2 engine built inside ``build_context()`` and from one rank,
    on a fresh tiny Llama with biases everywhere (a row-parallel bias must be added once, after the sum)."""
    import random

    from nanoinfer import LLM, SamplingParams

    rng = random.Random()
    prompts = [[rng.randrange(512) for _ in range(rng.randint(3, 40))] for _ in range(4)]
    path = make_tiny_checkpoint("llama", tmp_path, seed=rng.randrange(1000), attention_bias=True, mlp_bias=True)
    greedy = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    one = LLM(str(path), max_model_len=256, num_kvcache_blocks=64)
    want = [o.token_ids for o in one.generate(prompts, greedy, use_tqdm=False)]
    one.shutdown()
    with build_context():
        llm = LLM(str(path), max_model_len=256, num_kvcache_blocks=64, tensor_parallel_size=2)
    with llm:
        got = [o.token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]
        assert_no_leaks(llm)
    return got, want


def assert_cpu_engine_keeps_the_reference(checkpoint: Path, module_type, kernel, report_row: str) -> None:
    """A CPU engine leaves no ``module_type`` running the GPU ``kernel``, and its fast-path report row is empty."""
    from nanoinfer import LLM

    llm = LLM(str(checkpoint), max_model_len=128, device="cpu")
    assert all(m.op is not kernel for m in llm.model_runner.model.modules() if isinstance(m, module_type))
    assert llm.fast_paths().set_index("name").loc[report_row, "applied"] == ""
    llm.shutdown()
