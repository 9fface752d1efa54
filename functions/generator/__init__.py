"""The generator function: owns the model and streams generated tokens as NDJSON."""
