"""Backends: where instances come from (see :mod:`mark.backends.base` for the contract).

Importing the package registers the built-in backends (``local``, ``fake``, ``aws``).
"""

from mark.backends.aws import AwsBackend, CapacityError
from mark.backends.base import (
    BACKENDS,
    Backend,
    ExitCallback,
    LaunchSpec,
    NoticeCallback,
    make_backend,
    register_backend,
)
from mark.backends.fake import FakeBackend
from mark.backends.local import LocalBackend

__all__ = [
    "BACKENDS",
    "AwsBackend",
    "Backend",
    "CapacityError",
    "ExitCallback",
    "FakeBackend",
    "LaunchSpec",
    "LocalBackend",
    "NoticeCallback",
    "make_backend",
    "register_backend",
]
