"""Service configuration: the one settings object and the embedded Redis server."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
