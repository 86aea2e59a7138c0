"""headwise from Python: capture a transformers model's attention, queries and keys into a
headwise session file, read sessions back, and open them in the headwise window."""
from ._format import FORMAT_VERSION
from .session import Session, SessionError, load
from .viewer import ViewerNotFound, find_viewer, show


def capture(model, inputs, out, attention="auto", **kwargs):
    """See `headwise._capture.capture` (imports torch only when called)."""
    from ._capture import capture as _capture

    return _capture(model, inputs, out, attention=attention, **kwargs)


__all__ = ["capture", "load", "show", "Session", "SessionError", "ViewerNotFound",
           "find_viewer", "FORMAT_VERSION"]
