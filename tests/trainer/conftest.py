"""tests/trainer's fixtures live in tests/conftest.py (tiny_assets and torch_extensions, shared by
every directory); this file is kept so tests/trainer stays a package whose conftest is never the
top-level ``conftest`` module."""
