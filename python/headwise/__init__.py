"""headwise from Python: capture a transformers model's attention, queries and keys into a
headwise session file, read sessions back, and open them in the headwise window.

torch and transformers are imported only when `capture` runs; `load` and `show` need numpy and
safetensors alone."""
from ._capture import capture
from ._format import FORMAT_VERSION
from .session import Session, SessionError, load
from .viewer import ViewerNotFound, find_viewer, show

__all__ = ["capture", "load", "show", "Session", "SessionError", "ViewerNotFound",
           "find_viewer", "FORMAT_VERSION"]
