"""HTTP API (FastAPI). Imports only ``db`` and ``config``; never torch or ``model``."""
