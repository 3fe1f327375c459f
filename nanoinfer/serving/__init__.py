"""Online serving beside the engine: streaming (stream.py), an asyncio engine (async_llm.py), the OpenAI-compatible
server (server.py, started by ``python -m nanoinfer.serve``), its Prometheus metrics (metrics.py) and a load
generator with Poisson arrivals (loadgen.py)."""
