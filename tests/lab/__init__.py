"""The censorship lab: network namespaces that reproduce how censors block a messenger.

See docs/lab.md. ``python -m tests.lab up|down|status|scenario NAME`` for developers;
tests/lab/test_scenarios.py runs every scenario with real ``probe once`` processes.
"""
