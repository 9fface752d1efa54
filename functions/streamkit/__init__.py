"""Pieces both functions share: the error hierarchy, request ids and JSON logs.

Copied into both container images; it depends only on Starlette/FastAPI and the
standard library, so the gateway stays free of torch and transformers.
"""
