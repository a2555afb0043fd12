"""Reading Prometheus exposition text in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels; 0.0 when it is not there (a labelled
    series appears only once it has counted something)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def series(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of the sample ``name``: labels -> value."""
    return {labels: v for (n, labels), v in samples(text).items() if n == name}
