"""Benchmark: reach against prometheus-blackbox-exporter on loopback targets.

Run ``python -m bench --help``. Everything it starts listens on 127.0.0.0/8 only and is
stopped on exit; see docs/benchmark.md.
"""
