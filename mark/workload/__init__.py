"""Workloads: request traces and seeded arrival generators.

- :mod:`mark.workload.traces`: :class:`Trace` and :func:`load_trace` (text, CSV, gzip).
- :mod:`mark.workload.arrivals`: Poisson, MMPP, trace spreading, surges.
- :mod:`mark.workload.scenarios`: evaluation traces (low-rate, sparse with idle hours).
"""

from mark.workload.arrivals import (
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
from mark.workload.scenarios import low_rate, sparse_diurnal
from mark.workload.traces import Trace, collection_gaps, load_trace, shared_data_dir

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
    "shared_data_dir",
    "sparse_diurnal",
    "spread_trace",
    "surge_rate",
]
