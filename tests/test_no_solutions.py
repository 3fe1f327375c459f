"""The engine carries its own reference code: with the ``solutions`` package unimportable (in the engine's
process and in its tensor-parallel workers), every CPU path still generates transformers' greedy tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
try:
    import solutions
    raise SystemExit("the solutions package is importable: the test is not testing anything")
except ImportError:
    pass
from nanoinfer import LLM, SamplingParams

if __name__ == "__main__":
    requests = json.loads(sys.argv[1])
    out = []
    for model, knobs, prompts, n in requests:
        with LLM(model, **knobs) as llm:
            params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
            out.append([o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)])
    assert "solutions" not in sys.modules or sys.modules["solutions"] is None
    print("RESULT", json.dumps(out), flush=True)
"""


def test_every_cpu_path_runs_without_solutions(tmp_path, reference):
    blocker = tmp_path / "blocked" / "solutions"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('solutions/ is blocked for this test')\n")
    llama, smollm2 = reference("llama"), reference("smollm2")
    prompts, n = llama.prompts[:4], 12
    requests = [(str(llama.path), {"attention_backend": b, "max_model_len": 256}, prompts, n)
                for b in ("cpu", "torch", "naive")]
    requests.append((str(llama.path), {"tensor_parallel_size": 2, "max_model_len": 256}, prompts, n))
    requests.append((None, {"max_model_len": 256}, smollm2.prompts[:2], n))  # LLM(): the default model
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("NANOINFER_EXERCISES", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(requests)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    got = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    expected = [t[:n] for t in llama.greedy[:4]]
    for (model, knobs, _, _), tokens in zip(requests[:4], got[:4]):
        assert tokens == expected, f"{knobs}: not transformers' greedy tokens"
    assert got[4] == [t[:n] for t in smollm2.greedy[:2]], "the default model: not transformers' greedy tokens"
