"""Request time, on the scheduler thread: the model loop every running generation shares.

`scheduler` (the loop), `batch` (the batched KV cache and its forward step), `rows` (one
generation as a row: sampling, text, its terminal event), `sampling`, `textstream`
(incremental detokenizer, stop strings), `prompt` (tokenize, prefill).
"""
