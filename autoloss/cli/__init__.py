"""The front ends over the Python API (``autoloss.api``): the ``autoloss`` command (``main``), its ``knowledge``
sub-commands and the demo."""
from autoloss.cli.main import main

__all__ = ["main"]
