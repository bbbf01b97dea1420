"""metamanip: language-conditioned meta-learning workbench for robot multi-manipulation."""
__version__ = "0.1.0"
