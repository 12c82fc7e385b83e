"""Fixtures of the unit tests: the store pair (SQLite file, Redis prefix) from tests/support."""

from tests.support.stores import make_store, store

__all__ = ["make_store", "store"]
