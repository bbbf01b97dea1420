"""Hydra plugins of the metamanip workbench: the `experiment` group and the launcher presets' classes.

Hydra discovers these because they live in the `hydra_plugins` namespace package.
"""
