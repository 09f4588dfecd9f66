"""The Sanic front end: KServe v2 over a fleet of Triton instances.

Modules by job: :mod:`frontend.protocol` (v2 parsing and validation), :mod:`frontend.routing`
(weighted round robin counting requests), :mod:`frontend.upstream` (the keep-alive pool to
instances), :mod:`frontend.fleet` (ready instances per model), :mod:`frontend.stats` (Triton's
statistics summed over instances), :mod:`frontend.timing` (per-request records),
:mod:`frontend.app` (the Sanic app and its route table) and :mod:`frontend.worker` (extra worker
processes).
"""

from frontend.app import FrontEnd, create_app
from frontend.fleet import Fleet
from frontend.protocol import InferInfo, ModelMetadata, parse_infer
from frontend.routing import WeightedRoundRobin
from frontend.timing import RequestTiming, TimingLog
from frontend.upstream import Upstream, UpstreamConnectionError, UpstreamProtocolError, UpstreamReply

__all__ = [
    "Fleet",
    "FrontEnd",
    "InferInfo",
    "ModelMetadata",
    "RequestTiming",
    "TimingLog",
    "Upstream",
    "UpstreamConnectionError",
    "UpstreamProtocolError",
    "UpstreamReply",
    "WeightedRoundRobin",
    "create_app",
    "parse_infer",
]
