"""pypi-mirror: a PyPI mirror and verifying pull-through cache."""

#: The version when the package is not installed (``pypi-mirror --version`` prefers the
#: installed distribution's).
__version__ = "0.1.0"
