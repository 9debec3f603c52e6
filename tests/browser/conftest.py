"""The unit tests' loopback world (servers for every check), for the browser tests."""

from tests.unit.conftest import world  # noqa: F401
