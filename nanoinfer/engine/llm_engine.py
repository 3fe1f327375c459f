"""The engine loop: requests in, steps of schedule -> run -> postprocess, finished sequences out.

    add_request()  tokenise and queue a request (a Sequence in the scheduler's waiting queue)
    step()         Scheduler.schedule() picks the batch; ModelRunner.launch() runs the model and samples,
                   Scheduler.advance() counts the step's tokens as computed; ModelRunner.wait() returns
                   the sampled tokens, Scheduler.complete() appends them and retires finished sequences

With async scheduling the next step is launched before the previous one's tokens are waited for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.profiler import record_function

from nanoinfer.config import CPU_KV_CACHE_BYTES, EngineConfig, resolve_device, resolve_dtype
from nanoinfer.engine.block_manager import BlockManager
from nanoinfer.engine.events import EventBus
from nanoinfer.engine.metrics import EngineMetrics, StepRecord
from nanoinfer.engine.model_runner import ModelRunner, kv_bytes_per_block
from nanoinfer.engine.scheduler import Scheduler
from nanoinfer.engine.sequence import Sequence
from nanoinfer.models import load_model_config
from nanoinfer.parallel.comm import comm_stats
from nanoinfer.sampling_params import SamplingParams


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        # Everything that can be checked without touching weights is checked first.
        self.config = c = config
        self.model_dir, self.hf_config = self._resolve_model(c.model)
        self.device = resolve_device(c.device)
        self.dtype = resolve_dtype(c.dtype, self.device)
        c.fit_to_device(self.device)
        c.fit_to_model(self.hf_config)
        self.bytes_per_block = kv_bytes_per_block(self.hf_config, c.kvcache_block_size, self.dtype,
                                                  c.tensor_parallel_size)
        num_blocks, knob = self._kv_budget()
        if num_blocks is not None:
            c.check_kv_blocks(num_blocks, self.bytes_per_block, knob)
        self.tokenizer = self._load_tokenizer(self.model_dir)
        self.eos_token_ids = self._eos_token_ids()

        self.events = EventBus()
        if c.tensor_parallel_size > 1:  # spawns ranks 1.., and makes this process rank 0
            from nanoinfer.parallel.runner import ParallelModelRunner as runner_class
        else:
            runner_class = ModelRunner
        self.model_runner = runner_class(c, self.hf_config, self.model_dir, self.device, self.dtype, self.events)
        self.device = self.model_runner.device  # (rank 0's: cuda:0 with tensor parallelism)
        self.speculator = None
        try:
            if c.speculative_config is not None:  # drafts verified in one pass (nanoinfer/speculative)
                from nanoinfer.speculative.speculator import Speculator

                self.speculator = Speculator(self)
            if num_blocks is None:  # a GPU: what is left after the weights and the peak activations
                num_blocks = c.check_kv_blocks(self.model_runner.measure_kv_budget(), self.bytes_per_block, knob)
            if self.speculator:
                num_blocks = self.speculator.share_kv_budget(num_blocks, knob)
            self.model_runner.setup_kv_cache(num_blocks)
            if self.speculator:
                self.speculator.setup_kv_cache(num_blocks)
            self.async_scheduling = c.async_scheduling if c.async_scheduling is not None else (
                self.device.type == "cuda" and not self.speculator)  # speculation: off (speculator.py)
            self.metrics = EngineMetrics()
            self._reset_state()
            warm = self.device.type == "cuda" or c.compile  # compile and autotune before the first request
            self.warmup_seconds = self._warm_up() if warm else 0.0
        except BaseException:
            self.shutdown()
            raise

    def _reset_state(self) -> None:
        """A fresh block manager and scheduler: every block free, the prefix cache empty, counters at zero."""
        c = self.config
        self.block_manager = BlockManager(self.model_runner.num_blocks, c.kvcache_block_size, c.enable_prefix_caching,
                                          c.record_block_events, self.events)
        self.scheduler = Scheduler(c, self.block_manager, self.eos_token_ids, self.events)
        self.metrics.reset()
        self.step_index = 0
        self._next_seq_id = 0
        self._in_flight = None  # the launched step whose tokens have not been collected (async scheduling)

    def _warm_up(self) -> float:
        """Run a prefill and a few decode steps of a dummy request so that compilation (and, on a GPU,
        autotuning) happens now rather than inside the first real request; returns the seconds spent."""
        t0 = time.perf_counter()
        prompt = [i % self.hf_config.vocab_size for i in range(1, 2 + min(self.config.kvcache_block_size + 1,
                                                                          self.config.max_model_len - 8))]
        # a fresh prompt (greedy), then the same prompt again: a prefix-cache hit runs the paged prefill
        for temperature in (0.0, 1.0):
            self.add_request(prompt, SamplingParams(temperature=temperature, max_tokens=3, ignore_eos=True))
            while self.has_unfinished_requests():
                self.step()
        self._reset_state()
        return time.perf_counter() - t0

    def shutdown(self) -> None:
        """Give the KV cache and the CUDA graphs' memory back, and stop any tensor-parallel workers. The
        engine cannot run afterwards."""
        for part in (getattr(self, "speculator", None), getattr(self, "model_runner", None)):
            if part is not None:
                part.shutdown()

    # ---- set-up --------------------------------------------------------------------------------
    @staticmethod
    def _resolve_model(model: str | None):
        """(directory or None, transformers config): the embedded default, a directory, or a named shape
        with random weights (``nanoinfer/tools/shapes.py``)."""
        from nanoinfer.tools.shapes import SHAPES, shape_config

        if model is None:
            from nanoinfer.tools.convert import default_model_dir

            model_dir = default_model_dir()
        elif not Path(model).expanduser().exists() and model in SHAPES:
            return None, shape_config(model)
        else:
            model_dir = Path(model).expanduser()
        return model_dir, load_model_config(model_dir)

    def _kv_budget(self) -> tuple[int | None, str]:
        """Blocks the KV cache gets and the knob that set them; None when a GPU must be profiled first."""
        c = self.config
        if c.num_kvcache_blocks is not None:
            return c.num_kvcache_blocks, f"num_kvcache_blocks={c.num_kvcache_blocks}"
        if c.kv_cache_memory_bytes is not None or self.device.type == "cpu":
            budget = c.kv_cache_memory_bytes or CPU_KV_CACHE_BYTES
            num_blocks = min(budget // self.bytes_per_block, c.max_num_seqs * c.blocks_per_seq)  # more is never used
            return num_blocks, f"kv_cache_memory_bytes={budget}"
        return None, f"gpu_memory_utilization={c.gpu_memory_utilization}"

    @staticmethod
    def _load_tokenizer(model_dir: Path | None):
        if model_dir is None or not any((model_dir / f).is_file()
                                        for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return None  # token-id prompts still work (the tests' tiny random models have no tokenizer)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model_dir))

    def _eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        sources = [getattr(self.hf_config, "eos_token_id", None)]
        gen_file = self.model_dir / "generation_config.json" if self.model_dir else None
        if gen_file is not None and gen_file.is_file():
            sources.append(json.loads(gen_file.read_text()).get("eos_token_id"))
        if self.tokenizer is not None:
            sources.append(self.tokenizer.eos_token_id)
        for s in sources:
            if isinstance(s, int):
                ids.add(s)
            elif isinstance(s, (list, tuple)):
                ids.update(int(t) for t in s)
        return ids

    # ---- requests ------------------------------------------------------------------------------
    def tokenize(self, prompt: str | list[int], index: int = 0) -> list[int]:
        """Token ids of a prompt, checked; raises ValueError naming the prompt at fault."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError(f"prompt {index} is text, but {self.model_dir} has no tokenizer: pass token ids")
            ids = self.tokenizer.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompt {index} is empty")
        vocab = self.hf_config.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt {index} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
        if len(ids) >= self.config.max_model_len:
            raise ValueError(
                f"prompt {index} has {len(ids)} tokens but max_model_len is {self.config.max_model_len}, "
                "which leaves no room to generate: shorten the prompt or raise max_model_len"
            )
        return ids

    def add_request(self, prompt: str | list[int], sampling_params: SamplingParams | None = None,
                    prompt_token_ids: list[int] | None = None) -> Sequence:
        ids = prompt_token_ids if prompt_token_ids is not None else self.tokenize(prompt)
        params = sampling_params or SamplingParams()
        seq = Sequence(self._next_seq_id, ids, params, prompt=prompt if isinstance(prompt, str) else None)
        self._next_seq_id += 1
        if params.seed is not None:
            seq.generator = torch.Generator(device=self.device)
            seq.generator.manual_seed(params.seed)
        self.scheduler.add(seq)
        if self.events:
            self.events.emit("request_added", "LLMEngine", seq.seq_id, num_prompt_tokens=len(ids))
        return seq

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def abort_all(self) -> None:
        self.abort(*self.scheduler.running, *self.scheduler.waiting)

    def abort(self, *seqs: Sequence) -> None:
        """Drop these requests now (a client gone, a stream left early): their KV blocks are free at once."""
        self.scheduler.abort(*seqs)
        if not self.scheduler.has_unfinished():
            self._in_flight = None  # (it holds only aborted sequences' tokens)

    # ---- the loop ------------------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Run one engine step; return the sequences that finished in it.

        Synchronous: schedule, launch and wait for step N. With async scheduling the host schedules and
        launches step N while the GPU still runs step N-1, then collects step N-1's tokens; the GPU never
        waits for Python between steps, and token values reach the host one step later. If the step raises
        (a learner's op, an interrupt), the engine stays usable (LLM.generate aborts the requests); with
        tensor parallelism the ranks may be out of step, so the runner stops them.
        """
        if not self.scheduler.has_unfinished():
            return []  # nothing queued, running or in flight (it is dropped with the last request)
        self.step_index += 1
        self.events.step = self.block_manager.step = self.step_index
        t0 = time.perf_counter()
        if self.events:
            self.events.emit("step_start", "LLMEngine")
        with record_function("nanoinfer.schedule"):
            batch = self.scheduler.schedule()
        t1 = time.perf_counter()
        comm_before = (comm_stats.all_reduce_bytes + comm_stats.all_gather_bytes, comm_stats.seconds)
        handle = None
        if batch is not None:
            try:
                speculate = self.speculator and batch.phase == "decode"
                handle = (self.speculator if speculate else self.model_runner).launch(batch, self._in_flight)
            except BaseException:
                self.model_runner.step_failed()
                raise
            handle.positions = self.scheduler.advance(batch)
        elif self._in_flight is None:
            raise RuntimeError("the scheduler found nothing to run although requests are pending")
        t2 = time.perf_counter()
        done = handle
        if self.async_scheduling:
            done, self._in_flight = self._in_flight, handle
        finished, wait_s = [], 0.0
        if done is not None:
            try:
                sampled = self.model_runner.wait(done)
            except BaseException:
                self.model_runner.step_failed()
                raise
            wait_s = time.perf_counter() - t2
            with record_function("nanoinfer.postprocess"):
                finished = self.scheduler.complete(done.batch, done.positions, sampled)
        if not self.scheduler.has_unfinished():
            self._in_flight = None  # whatever is still in flight belongs to finished sequences
        t3 = time.perf_counter()
        if batch is not None:
            self.metrics.record(StepRecord(
                step=self.step_index, phase=batch.phase, num_seqs=len(batch.seqs), num_tokens=batch.num_tokens,
                num_sampled=len(handle.rows) + handle.num_accepted, num_preempted=len(batch.preempted),
                num_drafted=handle.num_drafted, num_accepted=handle.num_accepted, num_finished=len(finished),
                used_blocks=self.block_manager.num_used_blocks, start=t0, schedule_s=t1 - t0,
                model_s=t2 - t1, postprocess_s=t3 - t2, wait_s=wait_s, prepare_s=handle.host_s[0],
                sample_s=handle.host_s[1],
                comm_bytes=comm_stats.all_reduce_bytes + comm_stats.all_gather_bytes - comm_before[0],
                comm_s=comm_stats.seconds - comm_before[1],
            ))
            if self.events:
                self.events.emit("step_end", "LLMEngine", phase=batch.phase,
                                 seq_ids=[s.seq_id for s in batch.seqs], num_tokens=batch.num_tokens)
        return finished

    def memory_report(self) -> dict:
        """How the memory was planned: weights, peak activations, KV bytes per block, blocks, and how
        many sequences of max_model_len fit at once."""
        c, runner, per_block = self.config, self.model_runner, self.bytes_per_block
        report = {
            "device": str(self.device),
            "weights_bytes": sum(p.numel() * p.element_size() for p in runner.model.parameters()),
            "activation_peak_bytes": runner.activation_peak_bytes,
            "kv_bytes_per_block": per_block,
            "kv_bytes_per_token": per_block // c.kvcache_block_size,
            "num_blocks": runner.num_blocks,
            "block_size": c.kvcache_block_size,
            "kv_cache_bytes": per_block * runner.num_blocks,
            "max_concurrent_seqs_at_max_model_len": runner.num_blocks // c.blocks_per_seq,
            "max_cached_tokens": runner.num_blocks * c.kvcache_block_size,
        }
        if self.device.type == "cuda":
            report["gpu_total_bytes"] = torch.cuda.get_device_properties(self.device).total_memory
            report["gpu_memory_utilization"] = c.gpu_memory_utilization
        return report

    def detokenize(self, token_ids: list[int]) -> str | None:
        if self.tokenizer is None:
            return None
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

