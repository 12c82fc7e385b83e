"""Bundled policy files and keyword lists (package data)."""
