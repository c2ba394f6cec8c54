"""Benchmarks of ptebench against reference programs measured in the same run.

Each benchmark prints ratios to baselines timed on the same machine in the same run, so
that a figure still means something on a noisy, shared machine.  The baselines are the
project's reference programs in ``../shared/bench`` (used as they are, never copied).

- :mod:`ptebench.bench.ingest` -- ``ptebench bench ingest``: end-to-end ingest speed
  (text to a verified Parquet) in lines per CPU-second on one core, and peak RSS
  against input size.
"""
