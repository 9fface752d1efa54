"""Hypothesis settings for the property tests: random, never stored, replayable.

Every run draws fresh examples (no fixed seed), so CI keeps exploring. Nothing lands in the
checkout: there is no example database (`database=None`) and Hypothesis' other storage (its
cache of constants found in the source) goes to the temporary directory unless
HYPOTHESIS_STORAGE_DIRECTORY says otherwise. A failure prints a `@reproduce_failure(...)`
blob (`print_blob=True`) that replays it exactly. Each test sets its own `max_examples`,
sized for `make test-fast`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

settings.register_profile("properties", database=None, print_blob=True, deadline=None)
settings.load_profile("properties")

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "streaming-textgen-hypothesis")
