"""The ``profiled`` model: sleeps the profiled service time of each batch."""
