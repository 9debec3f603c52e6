"""Hardening tests: hostile responders, faults, evidence, config errors, exporter security, load.

Everything here talks only to loopback or to network namespaces the tests create (and
always remove). docs/reliability.md names the commands that produce its figures.
"""
