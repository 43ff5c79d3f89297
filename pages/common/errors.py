"""Library errors shown as an in-page st.error instead of a traceback (their messages are already precise)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st

from cotrr_core.views import ConfigError, DataError

# what a page shows as st.error instead of a traceback
ERRORS = (DataError, ConfigError, RuntimeError, ValueError, KeyError, OSError)


@contextlib.contextmanager
def shown_errors(what: str = "", stop: bool = True) -> Iterator[None]:
    """Show a library error as st.error ('what: message'); stop the page unless stop=False."""
    try:
        yield
    except ERRORS as exc:
        st.error(f"{what}: {exc}" if what else str(exc))
        if stop:
            st.stop()
