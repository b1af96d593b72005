"""Shared fixtures: the test bench plugins are registered here."""

pytest_plugins = ["tests.openshift_api", "tests.registry_bench"]
