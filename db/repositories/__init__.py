"""Repositories: query and change rows, flush only; the caller's unit of work commits."""
