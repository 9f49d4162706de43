"""Test-wide settings: a private cache of passed symbolic checks, shared with subprocesses; the
``pdflatex`` fixture for tests that build PDFs."""

import os
import shutil

import pytest


@pytest.fixture
def pdflatex() -> None:
    """Skip without TeX on a developer's machine; in CI (where test.sh installs it) fail."""
    if not (shutil.which("pdflatex") and shutil.which("pdftotext")):
        reason = "pdflatex and pdftotext are not installed: run ./test.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _private_check_cache(tmp_path_factory):
    os.environ["DERIVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("derive-cache"))
    yield
