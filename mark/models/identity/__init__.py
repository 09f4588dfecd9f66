"""The ``identity`` model: a trivial one for tests and overhead benchmarks."""
