"""Start-up: the model a process serves, loaded once (`loaded.load`).

`loaded` (device, precision, tokenizer, weights, end-of-text ids), `checkpoint`
(reading a checkpoint directory with a short path for plain ones), `lowbit` (the 4-bit
and int8 layers served on CPU, and the file they are read from).
"""
