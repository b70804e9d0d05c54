"""obreconcile: the OpenBalancer reconciler for fleets of nginx load balancers."""

# The one place the version is written: pyproject.toml reads it from here (hatch's version
# source), so no CLI start pays for importlib.metadata (~60 ms) to learn it.
__version__ = "0.1.0"
