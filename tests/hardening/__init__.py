"""Hardening tests: hostile responders, faults, evidence, config errors, exporter security, load.

Everything here talks only to loopback or to network namespaces the tests create (and
always remove). `python -m tests.hardening.load` and `python -m tests.hardening.report`
produce the figures in docs/reliability.md.
"""
