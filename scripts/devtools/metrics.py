"""Values read off a Prometheus `/metrics` page, with prometheus_client's own parser.

What the tests and the benchmark check (forward passes so far, requests by outcome,
the gateway's added-latency histogram...), by sample name and labels as Prometheus
writes them: a counter `x` is sampled as `x_total`, a histogram as `x_sum`, `x_count`
and `x_bucket`.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(base_url: str) -> str:
    """The `/metrics` page of the server at `base_url`."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def value(text: str, name: str, **labels: str) -> float:
    """The sample called `name` whose labels are exactly `labels`; LookupError if none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise LookupError(f"no sample {name}{labels or ''} in the metrics")


def metric(base_url: str, name: str, **labels: str) -> float:
    """One sample, read from the server at `base_url` now."""
    return value(scrape(base_url), name, **labels)
