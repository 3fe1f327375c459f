"""Online serving: llm.stream, AsyncLLM, the OpenAI-compatible server (driven by the official ``openai``
client) and the load generator. A tiny random Llama carries SmolLM2's tokenizer, so that text (with
multi-byte characters) goes both ways; tokens are forced where a test needs particular text."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import assert_no_leaks, make_tiny_checkpoint
from nanoinfer import LLM, SamplingParams

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

KNOBS = {"max_model_len": 256, "num_kvcache_blocks": 96, "max_num_seqs": 4}
MULTIBYTE = "naïve café — 世界 🎉👍🏽 ok Привет"
PROMPTS = ["Hello, my name is", "naïve café — 世界 🎉", "Привет мир, как дела?"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory, smollm2) -> Path:
    """A tiny random Llama with SmolLM2's byte-level BPE tokenizer and chat template."""
    path = make_tiny_checkpoint("llama", tmp_path_factory.mktemp("tiny_tok"), vocab_size=49152)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (smollm2 / name).is_file():
            shutil.copy(smollm2 / name, path / name)
    return path


@pytest.fixture(scope="module")
def llm(tiny_tok):
    with LLM(str(tiny_tok), **KNOBS) as llm:
        yield llm


def force_tokens(llm, token_ids: list[int]):
    """Make every request's i-th output token ``token_ids[i % len]`` whatever the model samples (the model still
    runs on them): a way to get chosen text, multi-byte characters split over tokens included."""
    scheduler = llm.engine.scheduler
    complete = scheduler.complete

    def forced(batch, positions, sampled):
        sampled = [t if pos is None else token_ids[(pos - s.num_prompt_tokens) % len(token_ids)]
                   for s, pos, t in zip(batch.seqs, positions, sampled)]
        return complete(batch, positions, sampled)

    scheduler.complete = forced
    return lambda: setattr(scheduler, "complete", complete)


# ---- streaming in process ----------------------------------------------------------------------
def test_incremental_detokenizer_holds_back_split_characters(llm):
    """fed one token at a time, no delta ends inside a character, and the deltas join to the whole text"""
    from nanoinfer.serving.stream import IncrementalDetokenizer

    ids = llm.tokenizer.encode(MULTIBYTE)
    partial = [llm.engine.detokenize(ids[: i + 1]) for i in range(len(ids))]
    assert any(t.endswith("\ufffd") for t in partial), "the text should split a character over tokens somewhere"
    text = IncrementalDetokenizer(llm.engine.detokenize)
    deltas = [text.add([t], final=i == len(ids) - 1) for i, t in enumerate(ids)]
    assert "".join(deltas) == MULTIBYTE
    assert all("\ufffd" not in d for d in deltas), deltas
    assert "" in deltas, "a split character's first tokens should give an empty delta"


def test_stream_equals_generate(llm):
    """greedy: per request, the streamed token ids and joined deltas are generate's, multi-byte prompts too"""
    expected = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    pieces: dict[int, list] = {}
    for out in llm.stream(PROMPTS, GREEDY):
        pieces.setdefault(out.index, []).append(out)
    for i, want in enumerate(expected):
        outs = pieces[i]
        assert sum((o.new_token_ids for o in outs), []) == want.token_ids
        assert "".join(o.delta for o in outs) == want.text
        assert [o.finished for o in outs] == [False] * (len(outs) - 1) + [True]
        assert outs[-1].finish_reason == want.finish_reason == "length"
    assert_no_leaks(llm)


def test_stream_forced_multibyte_text(llm):
    """forced tokens spelling multi-byte characters: deltas never carry U+FFFD and join to generate's text"""
    ids = llm.tokenizer.encode(MULTIBYTE)
    restore = force_tokens(llm, ids)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=len(ids), ignore_eos=True)
        want = llm.generate(PROMPTS[:2], params, use_tqdm=False)
        deltas: dict[int, list[str]] = {0: [], 1: []}
        for out in llm.stream(PROMPTS[:2], params):
            deltas[out.index].append(out.delta)
    finally:
        restore()
    for i in (0, 1):
        assert want[i].text == MULTIBYTE
        assert "".join(deltas[i]) == MULTIBYTE and not any("\ufffd" in d for d in deltas[i])


@settings(max_examples=200, deadline=None, database=None)
@given(st.text("ab世🎉", max_size=30), st.lists(st.text("ab世🎉", min_size=1, max_size=4), max_size=3),
       st.lists(st.integers(1, 30), max_size=10))
@example("baa", ["a", "baa"], [2])  # "ba|a": "baa", begun before the complete "a", ends the text first
def test_stop_strings_on_any_split(text, stops, cuts):
    """OpenAI's stop on deltas cut anywhere: the text handed out is the text before the first stop string"""
    from nanoinfer.serving.stream import StopStrings

    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    deltas = [text[a:b] for a, b in zip(bounds, bounds[1:])] or [""]
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    want = text[: min(found)] if found else text
    stop, out, hit = StopStrings(stops), [], False
    for i, d in enumerate(deltas):
        piece, hit = stop.feed(d, final=i == len(deltas) - 1)
        out.append(piece)
        if hit:
            break
    assert "".join(out) == want and hit == bool(found)


def test_leaving_a_stream_early_frees_its_blocks(llm):
    """breaking out of llm.stream aborts the requests left; no KV block stays held"""
    stream = llm.stream(PROMPTS, SamplingParams(temperature=0.0, max_tokens=100, ignore_eos=True))
    next(stream)
    assert llm.block_manager.num_used_blocks > 0
    stream.close()
    assert_no_leaks(llm)


def test_stream_checks_input_before_any_work(llm):
    with pytest.raises(ValueError, match="max_model_len"):
        llm.stream([[1] * 400])
    assert not llm.scheduler.has_unfinished()


def test_engine_abort_one_request(llm):
    """engine.abort frees one request's blocks at once; the others finish as they would have"""
    engine = llm.engine
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    ids = [engine.tokenize(p) for p in PROMPTS]
    want = llm.generate(ids, params, use_tqdm=False)
    seqs = [engine.add_request(p, params, p) for p in ids]
    engine.step()
    used = llm.block_manager.num_used_blocks
    engine.abort(seqs[1])
    assert seqs[1].finish_reason == "abort" and llm.block_manager.num_used_blocks < used
    while engine.has_unfinished_requests():
        engine.step()
    assert [seqs[0].output_token_ids, seqs[2].output_token_ids] == [want[0].token_ids, want[2].token_ids]
    assert_no_leaks(llm)


def test_async_llm_adds_and_aborts_while_running(tiny_tok):
    """AsyncLLM: requests added while others run give generate's tokens; one abandoned mid-way is aborted
    and frees its blocks; shutdown aborts what is left and stops the engine thread"""
    from nanoinfer.serving.async_llm import AsyncLLM

    reference = LLM(str(tiny_tok), **KNOBS)
    want = reference.generate(PROMPTS, GREEDY, use_tqdm=False)
    reference.shutdown()
    llm = LLM(str(tiny_tok), **KNOBS)
    engine = AsyncLLM(llm)
    reasons = []
    engine.finished_hooks.append(lambda seq: reasons.append(seq.finish_reason))

    async def one(prompt, delay):
        await asyncio.sleep(delay)
        ids, text = [], []
        async for out in engine.generate(prompt, GREEDY):
            ids += out.new_token_ids
            text.append(out.delta)
        return ids, "".join(text)

    async def abandoned():
        async for out in engine.generate(PROMPTS[0], SamplingParams(max_tokens=200, ignore_eos=True)):
            break  # the consumer leaves after its first token

    async def main():
        results = await asyncio.gather(*(one(p, 0.05 * i) for i, p in enumerate(PROMPTS)), abandoned())
        for _ in range(200):  # the abort reaches the engine thread before its next step
            if llm.block_manager.num_used_blocks == 0:
                break
            await asyncio.sleep(0.01)
        await engine.shutdown()
        return results

    results = asyncio.run(main())
    for (ids, text), w in zip(results, want):
        assert ids == w.token_ids and text == w.text
    assert sorted(reasons) == ["abort", "length", "length", "length"]
    assert not engine.running
    assert_no_leaks(llm)
    llm.shutdown()


def test_async_llm_step_failure_fails_its_requests_only(tiny_tok):
    """a step that raises fails the requests in flight with its error and frees their blocks; the engine
    thread goes on serving the next request"""
    from nanoinfer.serving.async_llm import AsyncLLM

    llm = LLM(str(tiny_tok), **KNOBS)
    step, calls = llm.engine.step, []

    def failing_once():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a broken step")
        return step()

    llm.engine.step = failing_once
    engine = AsyncLLM(llm)

    async def run(prompt):
        return [t async for out in engine.generate(prompt, GREEDY) for t in out.new_token_ids]

    async def main():
        with pytest.raises(RuntimeError, match="a broken step"):
            await run(PROMPTS[0])
        tokens = await run(PROMPTS[1])
        await engine.shutdown()
        return tokens

    assert len(asyncio.run(main())) == GREEDY.max_tokens
    assert_no_leaks(llm)
    llm.shutdown()


# ---- the server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_process(tiny_tok):
    """``python -m nanoinfer.serve`` on a free loopback port, in a child process."""
    from nanoinfer.serving.server import free_port

    port = free_port()
    knobs = [a for k, v in KNOBS.items() for a in ("--knob", f"{k}={v}")]
    proc = subprocess.Popen([sys.executable, "-m", "nanoinfer.serve", str(tiny_tok), "--port", str(port),
                             "--served-model-name", "tiny", "--shutdown-timeout", "5", *knobs],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_completions_equal_generate(server_process, llm):
    """streamed and non-streamed greedy completions and chat completions through the openai client equal
    llm.generate / llm.chat in this process"""
    _, url = server_process
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    want = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    for prompt, w in zip(PROMPTS, want):
        kwargs = dict(model="tiny", prompt=prompt, max_tokens=12, temperature=0.0, extra_body={"ignore_eos": True})
        full = client.completions.create(**kwargs)
        assert full.choices[0].text == w.text and full.choices[0].finish_reason == "length"
        assert full.usage.completion_tokens == 12 and full.usage.prompt_tokens == len(llm.engine.tokenize(prompt))
        chunks = list(client.completions.create(**kwargs, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == w.text
        assert chunks[-1].choices[0].finish_reason == "length"
    messages = [{"role": "user", "content": "Write a haiku about 世界."}]
    w = llm.chat(messages, GREEDY)
    kwargs = dict(model="tiny", messages=messages, max_tokens=12, temperature=0.0, extra_body={"ignore_eos": True})
    assert client.chat.completions.create(**kwargs).choices[0].message.content == w.text
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == w.text


def test_bad_requests_get_400(server_process):
    """each bad request gets a 400 with OpenAI's error body, naming the field, and never reaches the engine"""
    from prometheus_client.parser import text_string_to_metric_families

    _, url = server_process

    def metric(name: str) -> float:
        families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        return sum(s.value for f in families if f.name == name for s in f.samples if s.name.endswith("_total"))

    finished_before = metric("nanoinfer_requests_finished")
    base = {"model": "tiny", "prompt": "hi", "max_tokens": 4}
    cases = [({**base, "model": "gpt-4"}, "model"), ({**base, "max_tokens": -3}, "max_tokens"),
             ({**base, "max_tokens": 0}, "max_tokens"), ({**base, "temperature": 2.5}, "temperature"),
             ({**base, "temperature": -0.1}, "temperature"), ({**base, "prompt": "word " * 400}, "prompt"),
             ({**base, "prompt": [1, 2, 10**6]}, "prompt"), ({**base, "top_p": 0}, "top_p"),
             ({"model": "tiny"}, "prompt"), ({**base, "max_tokens": "many"}, "max_tokens")]
    for body, param in cases:
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert error["param"] == param, (body, error)
    r = httpx.post(f"{url}/v1/completions", content=b'{"model": "tiny", "prompt": ', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": "hi"}, timeout=30)
    assert r.status_code == 400
    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="none").completions.create(model="tiny", prompt="x",
                                                                               max_tokens=-1)
    assert metric("nanoinfer_requests_rejected") >= len(cases) + 3
    time.sleep(0.2)
    assert metric("nanoinfer_requests_finished") == finished_before, "a bad request reached the engine"


def test_metrics_parse(server_process):
    """/metrics is Prometheus text with the gauges and the latency histograms"""
    from prometheus_client.parser import text_string_to_metric_families

    _, url = server_process
    httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "hello", "max_tokens": 3}, timeout=60)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
    for name in ("nanoinfer_requests_running", "nanoinfer_requests_waiting", "nanoinfer_kv_blocks_used",
                 "nanoinfer_prefix_cache_hit_rate", "nanoinfer_time_to_first_token_seconds",
                 "nanoinfer_time_per_output_token_seconds", "nanoinfer_e2e_request_latency_seconds"):
        assert name in families, f"/metrics lacks {name}"
    assert families["nanoinfer_kv_blocks_used"].samples[0].value == 0  # nothing runs now
    assert families["nanoinfer_kv_blocks_total"].samples[0].value == KNOBS["num_kvcache_blocks"]
    ttft_count = next(s.value for s in families["nanoinfer_time_to_first_token_seconds"].samples
                      if s.name.endswith("_count"))
    assert ttft_count >= 1


def test_sigterm_finishes_and_leaves_nothing(server_process):
    """SIGTERM with a request in flight: it completes, every KV block is free, the process exits cleanly and
    leaves no child process (run last: it stops the module's server)"""
    proc, url = server_process
    result = {}

    def request():
        result["r"] = httpx.post(f"{url}/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": "a long one", "max_tokens": 200, "ignore_eos": True})

    thread = threading.Thread(target=request)
    thread.start()
    deadline = time.monotonic() + 30
    while "nanoinfer_requests_running 1.0" not in httpx.get(f"{url}/metrics").text:  # it is in flight
        assert time.monotonic() < deadline and thread.is_alive(), "the request never ran"
        time.sleep(0.01)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    thread.join(timeout=60)
    stderr = proc.stderr.read()
    assert "KV blocks free: 96/96" in stderr, stderr[-2000:]
    assert result["r"].status_code == 200 and result["r"].json()["usage"]["completion_tokens"] == 200
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child process {pid} outlived the server"


# ---- in-thread server: queue bound, disconnects, load -------------------------------------------
@pytest.fixture
def gated_server(tiny_tok):
    """A server in a thread whose engine steps only while ``gate`` is set (max_num_seqs 2, max_queue 1)."""
    from nanoinfer.serving.server import BackgroundServer

    llm = LLM(str(tiny_tok), **{**KNOBS, "max_num_seqs": 2})
    gate = threading.Event()
    gate.set()
    step = llm.engine.step

    def gated_step():
        gate.wait()
        return step()

    llm.engine.step = gated_step
    server = BackgroundServer(llm, "tiny", max_queue=1)
    reasons = []
    server.async_llm.finished_hooks.append(lambda seq: reasons.append((seq.finish_reason, seq.num_output_tokens)))
    yield server, llm, gate, reasons
    gate.set()
    server.stop()
    assert_no_leaks(llm)
    llm.shutdown()


def test_full_queue_gets_503(gated_server):
    """max_num_seqs + max_queue = 3 requests held; the 4th gets 503 at once; the 3 complete afterwards"""
    server, llm, gate, _ = gated_server
    gate.clear()
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 5, "ignore_eos": True}
    with httpx.Client(timeout=60) as client:
        threads, answers = [], []
        for _ in range(3):
            threads.append(threading.Thread(target=lambda: answers.append(
                client.post(f"{server.url}/v1/completions", json=body))))
            threads[-1].start()
        deadline = time.monotonic() + 30
        while server.app.state.counts["in_flight"] < 3:
            assert time.monotonic() < deadline, "the three requests were not accepted"
            time.sleep(0.01)
        r = client.post(f"{server.url}/v1/completions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full", r.text
        gate.set()
        for t in threads:
            t.join()
    assert [a.status_code for a in answers] == [200] * 3
    assert all(a.json()["usage"]["completion_tokens"] == 5 for a in answers)


def test_client_disconnect_aborts(gated_server):
    """a client that closes its stream mid-way aborts its request: its blocks are free before it would have
    finished"""
    server, llm, gate, reasons = gated_server
    body = {"model": "tiny", "prompt": "tell me everything", "max_tokens": 200, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{server.url}/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    gate.clear()  # hold the engine while the client leaves
                    break
    gate.set()
    deadline = time.monotonic() + 30
    while not reasons:
        assert time.monotonic() < deadline, "the request was not aborted"
        time.sleep(0.01)
    reason, n = reasons[0]
    assert reason == "abort" and n < 200
    time.sleep(0.1)
    assert llm.block_manager.num_used_blocks == 0


def test_client_disconnect_aborts_a_plain_request(gated_server):
    """a non-streamed request whose client gives up (a timeout) is aborted too"""
    server, llm, gate, reasons = gated_server
    body = {"model": "tiny", "prompt": "tell me everything", "max_tokens": 200, "ignore_eos": True}

    def impatient():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/completions", json=body, timeout=1.0)

    thread = threading.Thread(target=impatient)
    thread.start()
    deadline = time.monotonic() + 30
    while llm.block_manager.num_used_blocks == 0:  # admitted
        assert time.monotonic() < deadline, "the request never ran"
        time.sleep(0.005)
    gate.clear()  # the engine holds still while the client leaves
    thread.join()
    time.sleep(0.5)  # the server notices within 0.2 s
    gate.set()
    deadline = time.monotonic() + 30
    while not reasons:
        assert time.monotonic() < deadline, "the request was not aborted"
        time.sleep(0.01)
    assert reasons[0][0] == "abort" and reasons[0][1] < 200


def test_forced_multibyte_through_the_server(gated_server):
    """forced multi-byte text: the SSE chunks joined equal the non-streamed text, which is the text"""
    server, llm, gate, _ = gated_server
    ids = llm.tokenizer.encode(MULTIBYTE)
    force_tokens(llm, ids)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    kwargs = dict(model="tiny", prompt="世界", max_tokens=len(ids), temperature=0.0, extra_body={"ignore_eos": True})
    assert client.completions.create(**kwargs).choices[0].text == MULTIBYTE
    pieces = [c.choices[0].text for c in client.completions.create(**kwargs, stream=True)]
    assert "".join(pieces) == MULTIBYTE and not any("\ufffd" in p for p in pieces)


def test_stop_strings_through_the_server(gated_server):
    """stop ends the text before the stop string (across tokens and characters), streamed or not, and the
    request's blocks are freed"""
    server, llm, gate, reasons = gated_server
    ids = llm.tokenizer.encode(MULTIBYTE)
    force_tokens(llm, ids)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    for stop, want in ((["🎉👍", "zzz"], "naïve café — 世界 "), ("é —", "naïve caf"), (["nowhere"], MULTIBYTE * 2)):
        kwargs = dict(model="tiny", prompt="x", max_tokens=2 * len(ids), temperature=0.0, stop=stop,
                      extra_body={"ignore_eos": True})
        full = client.completions.create(**kwargs).choices[0]
        assert (full.text, full.finish_reason) == (want, "stop" if want != MULTIBYTE * 2 else "length")
        chunks = list(client.completions.create(**kwargs, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == want
    time.sleep(0.3)
    assert llm.block_manager.num_used_blocks == 0


def test_http_load_drops_nothing(tiny_tok):
    """Poisson arrivals over HTTP at a rate and at twice it (a few seconds each): every request completes
    with all its tokens; the percentiles are reported (latency is compared by the load command, not here)"""
    from nanoinfer.serving.loadgen import arrival_times, http_load
    from nanoinfer.serving.server import BackgroundServer

    llm = LLM(str(tiny_tok), **KNOBS)
    rows = []
    with BackgroundServer(llm, "tiny", max_queue=1000) as server:
        for rate in (10.0, 20.0):
            times = arrival_times(rate, 30, np.random.default_rng(0))
            times = times[times <= 2.0]
            frame, summary = asyncio.run(http_load(server.url, "tiny", ["hello there"] * len(times), times, 8))
            assert (frame["status"] == "ok").all() and (frame["output_tokens"] == 8).all(), frame
            rows.append({"rate": rate, **summary})
    assert_no_leaks(llm)
    llm.shutdown()
    print(json.dumps(rows, indent=1))
