"""Build time: what `make model` and the image build run, never the serving process.

`convert` (the embedded GGUF → safetensors and the low-bit file), `quantize` (the
low-bit codes), `quality` (the quality gate every served precision must pass). The
generator image leaves this folder out.
"""
