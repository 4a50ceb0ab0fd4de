"""Pytest fixtures for the fake Kubernetes API server (see :mod:`tests.harness.fake_kube_api`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.fake_kube_api import FakeKubeApi


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    """A fresh, empty fake API server on a free port, stopped after the test.

    ``.host``, ``.ca_pem``, ``.issue_token(ns, sa)``, ``.revoke_token(t)``, ``.api_client(t)``,
    ``.journal``, ``.objects(plural, ns)``, ``.get(plural, name, ns)``, ``.seed(obj)``.
    """
    with FakeKubeApi() as api:
        yield api
