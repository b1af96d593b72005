"""bench/test_bench.py is part of the suite: the session's fixtures of tests/ serve it too."""

from tests.conftest import no_retry_waits, prefect_server
from tests.harness.registry_bench import moto

__all__ = ["moto", "no_retry_waits", "prefect_server"]
