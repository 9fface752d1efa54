"""Pieces of the benchmarks (`make bench`, `make bench-gateway`), one concern a module.

Every measurement drives real code: the generator's decode loop in-process, real
uvicorn processes on loopback ports, and llama.cpp on the same GGUF as the anchor.
"""
