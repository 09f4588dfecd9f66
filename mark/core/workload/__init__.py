"""Workloads: request traces and seeded arrival generators.

- :mod:`mark.core.workload.traces`: :class:`Trace` and :func:`load_trace` (text, CSV, gzip).
- :mod:`mark.core.workload.arrivals`: Poisson, MMPP, trace spreading, surges.
- :mod:`mark.core.workload.scenarios`: evaluation traces (low-rate, sparse with idle hours).
"""

from mark.core.workload.arrivals import (
    MMPPSample,
    mmpp_arrivals,
    mmpp_sample,
    mmpp_trace,
    poisson_arrivals,
    rate_to_counts,
    rates_to_trace,
    spread_trace,
    surge_rate,
)
from mark.core.workload.scenarios import low_rate, sparse_diurnal
from mark.core.workload.traces import Trace, collection_gaps, load_trace, resolve_trace, shipped_trace

__all__ = [
    "MMPPSample",
    "Trace",
    "collection_gaps",
    "load_trace",
    "low_rate",
    "mmpp_arrivals",
    "mmpp_sample",
    "mmpp_trace",
    "poisson_arrivals",
    "rate_to_counts",
    "rates_to_trace",
    "resolve_trace",
    "shipped_trace",
    "sparse_diurnal",
    "spread_trace",
    "surge_rate",
]
