"""The session file's names and its atomic writer: the contract in DESIGN.md ("The session
file", "Session format 2"), kept in one place so that capture and load agree on it."""
import json
import os
import tempfile

import numpy as np

#: The format this package writes; it reads 1 and 2.
FORMAT_VERSION = 2
#: The safetensors metadata key that holds the session's JSON.
METADATA_KEY = "headwise"


def tensor_name(prefix, input_index, layer=None):
    """`attn/{input}/{layer}`, `lse/{input}/{layer}`, `image/{input}` ..."""
    return f"{prefix}/{input_index}" if layer is None else f"{prefix}/{input_index}/{layer}"


def write_session(path, tensors, meta):
    """Writes `tensors` (name -> numpy array) and `meta` (the JSON object) to `path` through a
    temporary file in the same folder and a rename, so that a reader (the window watching the
    file among them) never sees half a file."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".headwise-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
                  metadata={METADATA_KEY: json.dumps(meta, ensure_ascii=False)})
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
