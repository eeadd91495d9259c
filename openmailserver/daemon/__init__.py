"""The daemon: a supervisor (`supervisor`) that binds the listeners (`listeners`) and runs
worker processes (`worker`), each serving every listener."""

from .listeners import StartupError
from .supervisor import run

__all__ = ["StartupError", "run"]
