"""obreconcile: the OpenBalancer reconciler for fleets of nginx load balancers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("obreconcile")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
