"""API services: the logic behind the routes (validation, views, queueing)."""
