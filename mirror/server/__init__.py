"""The aiohttp application: routes, pull-through, file serving, metrics, health."""

from mirror.server.app import create_app

__all__ = ["create_app"]
