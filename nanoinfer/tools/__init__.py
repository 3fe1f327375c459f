"""Tools around the engine: the benchmark (bench.py), the GGUF conversion of the default model (convert.py),
named model shapes with random weights (shapes.py), profiling (profiling.py) and the main job (demo.py)."""
