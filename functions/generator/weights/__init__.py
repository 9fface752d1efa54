"""Start-up: the model a process serves, loaded once (`loaded.load`).

`loaded` (device, precision, decoder, tokenizer, weights, end-of-text ids), `llama` (the
Llama family's weights, fused, read without transformers), `tokenizer` (`tokenizers` and
the chat template, without transformers), `checkpoint` (a checkpoint for transformers'
modeling code), `lowbit` (the 4-bit and int8 layers served on CPU, and their file),
`memory` (the allocator returns what start-up freed).
"""
