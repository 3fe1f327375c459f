"""The server's Prometheus metrics, in a registry of its own (two servers in one process don't collide).

Gauges read the engine thread's last snapshot (AsyncLLM.stats) when scraped; the latency histograms are
filled from each finished request's RequestMetrics, the engine's own timestamps.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a fraction of a CPU decode step to a long queue wait.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    def __init__(self, async_llm) -> None:
        self.registry = r = CollectorRegistry()
        stat = lambda key: (lambda: async_llm.stats[key])  # noqa: E731
        for name, key, doc in [("requests_running", "running", "requests holding KV blocks"),
                               ("requests_waiting", "waiting", "requests queued for admission"),
                               ("kv_blocks_used", "used_blocks", "KV-cache blocks in use"),
                               ("kv_blocks_total", "total_blocks", "KV-cache blocks in all"),
                               ("prefix_cache_hit_rate", "hit_rate", "share of prompt tokens served by the cache")]:
            Gauge(f"nanoinfer_{name}", doc, registry=r).set_function(stat(key))
        self.ttft = Histogram("nanoinfer_time_to_first_token_seconds", "arrival to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("nanoinfer_time_per_output_token_seconds", "mean gap between output tokens",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("nanoinfer_e2e_request_latency_seconds", "arrival to the last token",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.finished = Counter("nanoinfer_requests_finished", "requests finished, by reason",
                                ["finish_reason"], registry=r)
        self.rejected = Counter("nanoinfer_requests_rejected", "requests refused, by HTTP status", ["status"],
                                registry=r)
        self.prompt_tokens = Counter("nanoinfer_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter("nanoinfer_generation_tokens", "tokens generated", registry=r)
        async_llm.finished_hooks.append(self.observe)

    def observe(self, seq) -> None:
        """A request finished (called in the engine thread; prometheus_client is thread-safe)."""
        m = seq.metrics
        for histogram, value in ((self.ttft, m.time_to_first_token), (self.tpot, m.time_per_output_token),
                                 (self.e2e, m.e2e_latency)):
            if value is not None:
                histogram.observe(value)
        self.finished.labels(seq.finish_reason or "unknown").inc()
        self.prompt_tokens.inc(seq.num_prompt_tokens)
        self.generation_tokens.inc(seq.num_output_tokens)

    def text(self) -> bytes:
        return generate_latest(self.registry)
