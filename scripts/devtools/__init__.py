"""Development tools shared by the tests, the benchmark and `make local-up`.

- `processes`: server processes on loopback ports, each in its own process group, and
  how to stop them (what `make local-up`, the benchmark and the end-to-end tests run).
- `paced_upstream`: a stand-in generator without a model, streaming at a fixed pace (the
  gateway's load source).
- `reference`: one generation decoded alone, step by step, with the server's own pieces.
- `metrics`: values read off a Prometheus `/metrics` page.

Tests and scripts import from here; nothing here imports from `tests/`.
"""
