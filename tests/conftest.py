"""Shared pytest configuration: the real-component harness is loaded as plugins."""

pytest_plugins = [
    "tests.harness.openbao",
    "tests.harness.gitrepo",
    "tests.harness.kube",
    "tests.harness.environments",
]
