"""churnwatch: real-time churn early warning for mobile operators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("churnwatch")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
