"""An asyncio front for the engine: requests arrive and leave while the engine loop runs.

The engine is not thread-safe, and does not need to be: one background thread owns it and runs the loop
(take new requests and aborts from a queue, step, hand each request's new tokens to its asyncio queue).
Asyncio code only tokenises and detokenises, so a slow client never stalls a step, and the engine thread
never touches the tokenizer. ``generate`` is an async iterator of StreamOutput; leaving it early (a client
gone) aborts the request, and its KV blocks are free before the next step.

While an AsyncLLM runs, only its thread may use the engine: don't call ``llm.generate`` beside it. The
engine's events (``llm.trace``) then come from that thread; the exercise selection is the process's, as ever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from typing import AsyncIterator, Callable

from nanoinfer.engine.sequence import Sequence
from nanoinfer.sampling_params import SamplingParams
from nanoinfer.serving.stream import IncrementalDetokenizer, RequestStream, StreamOutput


class EngineStopped(RuntimeError):
    """The AsyncLLM was shut down: it takes no new request."""


class _Request:
    """One request in flight: the sequence (set by the engine thread) and the asyncio queue its output goes to."""

    def __init__(self, loop: asyncio.AbstractEventLoop, outputs: asyncio.Queue) -> None:
        self.loop, self.outputs = loop, outputs
        self.seq: Sequence | None = None
        self.stream: RequestStream | None = None

    def deliver(self, out: StreamOutput | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.outputs.put_nowait, out)
        except RuntimeError:  # its event loop is closed: nobody is listening any more
            pass


class AsyncLLM:
    def __init__(self, llm) -> None:
        self.llm, self.engine = llm, llm.engine
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._requests: list[_Request] = []  # (the engine thread's)
        self.num_unfinished = 0  # accepted and not yet finished (for the server's queue bound)
        self.finished_hooks: list[Callable[[Sequence], None]] = []  # called in the engine thread
        self.stats = self._stats()  # a snapshot the engine thread refreshes after each step
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="nanoinfer-engine", daemon=True)
        self._thread.start()

    # ---- the asyncio side ----------------------------------------------------------------------
    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                       prompt_token_ids: list[int] | None = None) -> AsyncIterator[StreamOutput]:
        """Add a request (checked here, before it reaches the engine) and yield its output as it comes."""
        if self._stopping:
            raise EngineStopped("the engine is shutting down")
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        ids = prompt_token_ids if prompt_token_ids is not None else self.engine.tokenize(prompt)
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()
        request = _Request(loop, outputs)
        text = IncrementalDetokenizer(self.engine.detokenize)
        self.num_unfinished += 1
        self._commands.put(("add", request, prompt, params, ids))
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    finished = True
                    raise out
                finished = out.finished
                yield dataclasses.replace(out, delta=text.add(out.new_token_ids, out.finished))
        finally:
            self.num_unfinished -= 1
            if not finished:  # the consumer left (a client gone, a cancelled task): free its blocks now
                self._commands.put(("abort", request))

    async def shutdown(self, timeout: float = 0.0) -> None:
        """Take no new request; let those in flight finish for up to ``timeout`` seconds, abort the rest, and
        stop the engine thread. Every KV block is free afterwards."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        while self.num_unfinished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._commands.put(("stop",))
        await asyncio.to_thread(self._thread.join)

    def stop_now(self) -> None:
        """shutdown(0) from synchronous code (not from the engine thread)."""
        self._stopping = True
        self._commands.put(("stop",))
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # ---- the engine thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run()
        finally:  # (a crash, or requests that came after the stop): nobody may wait for ever
            stopped = EngineStopped("the engine thread has stopped")
            self.engine.abort(*(r.seq for r in self._requests if r.seq is not None))
            for r in self._requests:
                r.deliver(stopped)
            while not self._commands.empty():
                command = self._commands.get_nowait()
                if command[0] == "add":
                    command[1].deliver(stopped)

    def _run(self) -> None:
        engine, stop = self.engine, False
        while not stop:
            # Idle: sleep until a command comes. Busy: take whatever came during the last step.
            commands = [self._commands.get()] if not engine.has_unfinished_requests() else []
            while True:
                try:
                    commands.append(self._commands.get_nowait())
                except queue.Empty:
                    break
            for command in commands:
                try:
                    stop = self._apply(command) or stop
                except Exception as error:  # (requests are checked before they come here)
                    command[1].deliver(error)
            if engine.has_unfinished_requests() and not stop:
                try:
                    engine.step()
                except Exception as error:  # the step failed: every request in flight fails with it
                    engine.abort(*(r.seq for r in self._requests))
                    for r in self._requests:
                        r.deliver(error)
                    self._requests = []
            self._publish()
        self.stats = self._stats()

    def _apply(self, command) -> bool:
        """Add or abort a request; True for stop (after aborting every request left)."""
        kind, engine = command[0], self.engine
        if kind == "add":
            _, request, prompt, params, ids = command
            request.seq = engine.add_request(prompt, params, ids)
            request.stream = RequestStream(0, request.seq)
            self._requests.append(request)
        elif kind == "abort":
            engine.abort(command[1].seq)
        elif kind == "stop":
            engine.abort(*(r.seq for r in self._requests))
            return True
        return False

    def _publish(self) -> None:
        """Hand each request its new tokens (text is decoded on the asyncio side); forget finished ones."""
        for r in self._requests:
            out = r.stream.poll()
            if out is None:
                continue
            if out.finished:
                for hook in self.finished_hooks:
                    hook(r.seq)
            r.deliver(out)
        self._requests = [r for r in self._requests if not r.stream.done]
        self.stats = self._stats()

    def _stats(self) -> dict:
        scheduler, bm = self.engine.scheduler, self.engine.block_manager
        return {"running": len(scheduler.running), "waiting": len(scheduler.waiting),
                **bm.get_cache_stats()}
