"""workbench: a terminal lab workbench for diffusion-model research."""

__version__ = "0.1.0"
