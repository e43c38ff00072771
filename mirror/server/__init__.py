"""The aiohttp application (``server.app.create_app``): routes, pull-through, file serving,
metrics, health; and ``serve`` itself (``server.run``), alone or as a supervisor of workers."""
