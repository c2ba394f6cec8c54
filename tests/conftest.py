"""Shared fixtures: where the real capture bundles live (skip the test when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """``shared/traces`` beside the clone: all eight capture bundles."""
    path = _REPO.parent / "shared" / "traces"
    if not path.is_dir():
        pytest.skip(f"capture bundles not found at {path}")
    return path


@pytest.fixture(scope="session")
def repo_traces() -> Path:
    """``traces/`` in the repository: small copies of some bundles."""
    path = _REPO / "traces"
    if not path.is_dir():
        pytest.skip(f"repository traces not found at {path}")
    return path
