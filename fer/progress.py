"""Progress bars where tqdm is installed (the training stack); none in the serving install."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(it: Any = None, **tqdm_kw: Any) -> Any:
    """tqdm over `it` on stderr (or a bar to update by hand when `it` is None); without tqdm, `it`."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the serving install has no tqdm: no bar
        return it
    return tqdm(it, file=sys.stderr, dynamic_ncols=True, leave=False, **tqdm_kw)
