"""Request time, on the scheduler thread: the model loop every running generation shares.

`scheduler` (the loop), `decoder` (what the loop needs of a model), `llama` (the native,
batch-invariant decoder for the Llama family), `batch` (transformers' modeling code, for
every other architecture), `rows` (one generation as a row: sampling, text, its terminal
event), `sampling`, `textstream` (incremental detokenizer, stop strings), `prompt`
(tokenize).
"""
