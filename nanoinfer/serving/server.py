"""An OpenAI-compatible HTTP server on FastAPI and uvicorn, over an AsyncLLM.

    POST /v1/completions, /v1/chat/completions   with ``"stream": true``: server-sent events, ``data: {...}``
                                                  chunks, then ``data: [DONE]``
    GET  /v1/models, /health, /metrics (Prometheus text)

Every request is checked here, before it reaches the engine: a bad one gets a 400 with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``. At most ``max_num_seqs + max_queue`` requests are held;
more get a 503 at once rather than a queue that grows without limit. A client that disconnects aborts its
request (its KV blocks are free before the next step). Extensions to OpenAI's fields, as vLLM has them:
``top_k``, ``ignore_eos``, ``stop_token_ids``. ``stop`` strings are applied here, to the text: the request
is aborted in the engine once one appears.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict

from nanoinfer.sampling_params import SamplingParams
from nanoinfer.serving.async_llm import AsyncLLM
from nanoinfer.serving.metrics import ServerMetrics
from nanoinfer.serving.stream import StopStrings


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # fields we don't use (user, presence_penalty at 0, ...) pass
    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # (the chat API's newer name)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    n: int = 1
    stream: bool = False
    stream_options: dict | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[int]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage]


def sampling_params(body: _Sampling, default_max_tokens: int) -> SamplingParams:
    """OpenAI's fields as a SamplingParams; SamplingParams' own checks name the field at fault."""
    if not 0.0 <= body.temperature <= 2.0:
        raise APIError(400, f"temperature must be in [0, 2], got {body.temperature}", "temperature")
    if body.n != 1:
        raise APIError(400, f"n must be 1 (one completion per request), got {body.n}", "n")
    max_tokens = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens
    try:
        return SamplingParams(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                              max_tokens=default_max_tokens if max_tokens is None else max_tokens,
                              seed=body.seed, ignore_eos=body.ignore_eos, stop_token_ids=body.stop_token_ids)
    except ValueError as e:
        field = str(e).split(" ")[0].removeprefix("SamplingParams.")
        raise APIError(400, str(e), field) from None


def build_app(async_llm: AsyncLLM, model_name: str, max_queue: int = 64, shutdown_timeout: float = 0.0) -> FastAPI:
    llm, engine = async_llm.llm, async_llm.engine
    capacity = engine.config.max_num_seqs + max_queue
    metrics = ServerMetrics(async_llm)
    state = {"in_flight": 0}

    @asynccontextmanager
    async def lifespan(app):
        yield
        await async_llm.shutdown(shutdown_timeout)  # (uvicorn has closed or cancelled the connections by now)

    app = FastAPI(title="nanoinfer", lifespan=lifespan)
    app.state.async_llm, app.state.metrics, app.state.counts = async_llm, metrics, state

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        metrics.rejected.labels(str(e.status)).inc()
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):  # malformed JSON, a wrong type, ...
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        message = "malformed JSON body" if first.get("type") == "json_invalid" else \
            f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return await api_error(request, APIError(400, message, loc[0] if loc else None))

    def check_model(body: _Sampling) -> None:
        if body.model != model_name:
            raise APIError(400, f"model {body.model!r} is not served here; this server serves {model_name!r}",
                           "model", "model_not_found")

    def admit(body: _Sampling, prompt_ids: list[int]) -> SamplingParams:
        params = sampling_params(body, 16 if isinstance(body, CompletionRequest)
                                 else engine.config.max_model_len - len(prompt_ids))
        if not async_llm.running:
            raise APIError(503, "the engine has stopped", None, "engine_stopped", "server_error")
        if state["in_flight"] >= capacity:
            raise APIError(503, f"the server holds {state['in_flight']} requests, its limit (max_num_seqs + "
                                f"max_queue = {capacity}): retry later", None, "queue_full", "server_overloaded")
        return params

    def tokenize(prompt, param: str) -> list[int]:
        try:
            return engine.tokenize(prompt)
        except ValueError as e:  # empty, too long for max_model_len, ids outside the vocabulary, no tokenizer
            raise APIError(400, str(e).replace("prompt 0", "the prompt"), param) from None

    @app.get("/health")
    async def health():
        if not async_llm.running:
            raise APIError(503, "the engine has stopped", type="server_error")
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "nanoinfer",
                                            "max_model_len": engine.config.max_model_len}]}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body)
        ids = tokenize(body.prompt, "prompt")
        return await respond(body, request, ids, admit(body, ids), chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check_model(body)
        if llm.tokenizer is None or not getattr(llm.tokenizer, "chat_template", None):
            raise APIError(400, f"model {model_name!r} has no chat template: use /v1/completions", "messages")
        conversation = [m.model_dump() for m in body.messages]
        ids = tokenize(llm.chat_prompt(conversation), "messages")
        return await respond(body, request, ids, admit(body, ids), chat=True)

    def hold():
        """Count a request in until the function returned is called (once; a second call does nothing)."""
        state["in_flight"] += 1
        held = [True]

        def release() -> None:
            if held:
                held.pop()
                state["in_flight"] -= 1

        return release

    async def respond(body: _Sampling, request: Request, ids: list[int], params: SamplingParams, chat: bool):
        release = hold()
        outputs = async_llm.generate(None, params, ids)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": model_name}
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            events = sse(pieces(outputs, body.stop), head, chat, usage, release)
            weakref.finalize(events, release)  # (a client gone before the stream started never runs it)
            return StreamingResponse(events, media_type="text/event-stream")
        task = asyncio.ensure_future(collect(outputs, body.stop))
        try:
            while not task.done():  # a client that leaves before the answer aborts its request
                await asyncio.wait({task}, timeout=0.2)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
            text, n, reason = await task
        finally:
            task.cancel()  # (when this handler itself was cancelled: a shutdown past its timeout)
            release()
        message = {"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None}
        return {**head, "object": "chat.completion" if chat else "text_completion",
                "choices": [{"index": 0, **message, "finish_reason": reason}], "usage": _usage(len(ids), n)}

    async def pieces(outputs, stop: str | list[str] | None):
        """(text delta, new tokens, finish reason or None, prompt tokens) per output; a stop string met ends
        the request there (closing the outputs aborts it in the engine)."""
        stops = StopStrings([stop] if isinstance(stop, str) else stop or [])
        try:
            async for out in outputs:
                delta, hit = stops.feed(out.delta or "", out.finished)
                yield delta, len(out.new_token_ids), "stop" if hit else out.finish_reason, out.num_prompt_tokens
                if hit:
                    return
        finally:
            await outputs.aclose()

    async def collect(outputs, stop):
        text, n, reason = [], 0, None
        async for delta, new, reason, _ in pieces(outputs, stop):
            text.append(delta)
            n += new
        return "".join(text), n, reason

    async def sse(outputs, head, chat: bool, usage: bool, release):
        kind = "chat.completion.chunk" if chat else "text_completion"
        n, num_prompt = 0, 0
        try:
            if chat:
                yield _event({**head, "object": kind, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                                   "finish_reason": None}]})
            async for delta, new, reason, num_prompt in outputs:
                n += new
                if delta or reason:
                    piece = {"delta": {"content": delta} if delta else {}} if chat else {"text": delta, "logprobs": None}
                    yield _event({**head, "object": kind, "choices": [{"index": 0, **piece, "finish_reason": reason}]})
            if usage:
                yield _event({**head, "object": kind, "choices": [], "usage": _usage(num_prompt, n)})
            yield "data: [DONE]\n\n"
        finally:  # (a cancelled stream's generator is closed: AsyncLLM.generate then aborts the request)
            await outputs.aclose()
            release()

    return app


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """The server on a loopback port, run by uvicorn in a thread of this process (notebooks, the load
    generator, tests): ``with BackgroundServer(llm) as server: ... server.url``. Leaving the block shuts it
    down like SIGTERM does (in-flight requests get ``shutdown_timeout`` seconds), and the engine thread stops."""

    def __init__(self, llm, model_name: str = "nanoinfer", port: int | None = None, max_queue: int = 64,
                 shutdown_timeout: float = 0.0) -> None:
        import threading

        import uvicorn

        self.async_llm = AsyncLLM(llm)
        self.app = build_app(self.async_llm, model_name, max_queue, shutdown_timeout)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=max(shutdown_timeout, 1.0))  # (0 logs a spurious error)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="nanoinfer-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.async_llm.stop_now()
                raise RuntimeError(f"the server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()
        if self.async_llm.running:
            self.async_llm.stop_now()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
