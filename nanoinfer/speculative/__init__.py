"""Speculative decoding, beside the engine: a cheap proposer drafts k tokens per sequence, the target scores
them all in one pass, and an accept/reject rule keeps a prefix of them plus one token of its own, so the
output is distributed exactly as without speculation (identical, for greedy requests).

  config.py       the ``speculative_config`` knob and its checks (called from nanoinfer/config.py)
  ngram.py        prompt lookup: drafts copied from earlier in the sequence
  draft_model.py  drafts from a smaller model with the same vocabulary, or from the target's first layers
  rejection.py    the accept/reject rule (Exercise 8.1) and the distributions it compares
  speculator.py   one speculative decode step: room, propose, verify, accept, roll back

The engine builds a Speculator when ``speculative_config`` is set and sends its decode batches to it.
"""
