"""Test-wide settings: a private cache of passed symbolic checks, shared with subprocesses."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_check_cache(tmp_path_factory):
    os.environ["DERIVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("derive-cache"))
    yield
