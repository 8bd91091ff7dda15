"""Reading /metrics in tests: Prometheus' text format, parsed by prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, metric: str, /, **labels: str) -> float:
    """The value of one series: a sample's full name (`..._total`, `..._count`) and exactly these labels; 0 when it is absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == metric and found.labels == labels:
                return float(found.value)
    return 0.0
