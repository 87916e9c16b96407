"""Benchmarks behind ``make bench`` (figures written to ``bench-results.json``, never asserted
in tests). Run one with ``python -m bench.<name> --help``; see :mod:`bench.common`."""
