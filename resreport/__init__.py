"""Run the residual-network lab end to end and render a submittable report."""

__version__ = "0.1.0"
