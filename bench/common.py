"""What the benchmarks share: where the shared traces are and which types they plan over."""

from __future__ import annotations

from mark.core.workload.traces import shipped_trace

TWITTER = shipped_trace("twitter-2021-08-week1")
# CPU types only: with the shipped GPU estimates one g4dn/p2 would carry a whole trace,
# which says little about provisioning; benches that take --all-types lift this
CPU_TYPES = ("c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge", "m5.large", "m5.xlarge",
             "m5.2xlarge")
