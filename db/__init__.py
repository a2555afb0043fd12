"""Persistence: ORM models, engine/session handling, repositories and migrations.

This package imports no other project package; callers hand it database URLs.
"""
