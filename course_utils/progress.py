"""The course's progress bar: `tqdm.auto`, plus a finished text bar in executed notebooks.

    from course_utils.progress import tqdm, trange

In a terminal (or any process without a Jupyter kernel) this is exactly `tqdm.auto.tqdm`:
the text bar on stderr. In a Jupyter kernel it is `tqdm.auto`'s widget bar with one change.
`tqdm.notebook` shows the bar with `display(container)`, and the `text/plain` that goes
into the notebook with it is the bar's text at that moment, "0%|...| 0/600", which then
never changes: a notebook executed headless (nbclient, nbval, `run-notebooks`) and read
without widget JavaScript (GitHub's text view, nbconvert to markdown or text) shows every
bar frozen at 0 %. Here the container is shown with a `display_id`, and on `close()` that
display is updated once, so its `text/plain` is the final bar ("train: 100%|##########|
600/600 [00:05<00:00, ...]", or where an interrupted loop stopped) while the widget view
stays the same live widget. A `leave=False` bar that finishes is replaced by empty text,
i.e. removed, where tqdm would hide the widget. Nothing else changes: no output per
iteration (miniters and mininterval as tqdm has them), `disable=True` shows nothing.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm as _auto_tqdm

__all__ = ["tqdm", "trange", "NOTEBOOK"]

_notebook = sys.modules.get("tqdm.notebook")
# tqdm.auto picks its notebook class at import (a Jupyter kernel with ipywidgets) or plain tqdm
NOTEBOOK = _notebook is not None and issubclass(_auto_tqdm, _notebook.tqdm_notebook)

if NOTEBOOK:
    from IPython.display import display as _ipy_display

    class tqdm(_auto_tqdm):  # noqa: N801 - the name tqdm users expect
        """`tqdm.auto.tqdm` whose notebook output ends with the finished bar as `text/plain`."""

        _handle = None  # the IPython DisplayHandle of the shown container (None: not shown)

        def __init__(self, *args, **kwargs):
            kwargs = dict(kwargs)
            display_here = kwargs.pop("display", True)
            super().__init__(*args, display=False, **kwargs)  # shows nothing yet
            if getattr(self, "container", None) is not None and display_here and self.delay <= 0:
                self._show()

        def _show(self):
            self._handle = _ipy_display(self.container, display_id=True)
            self.displayed = True

        def display(self, msg=None, pos=None, close=False, bar_style=None, check_delay=True):
            # tqdm.notebook shows a delayed bar with a plain display(); show it with an id instead
            super().display(msg, pos, close=close, bar_style=bar_style, check_delay=False)
            if check_delay and self.delay > 0 and not self.displayed:
                self._show()

        def close(self):
            if self.disable:
                return
            super().close()
            handle, self._handle = self._handle, None
            if handle is None:
                return
            try:
                if self.leave or (self.total and self.n < self.total):
                    # kept bars, and bars that stopped short (tqdm keeps those too): the final state
                    handle.update(self.container)
                else:  # a finished leave=False bar: tqdm hides the widget; remove the output
                    handle.update({"text/plain": ""}, raw=True)
            except Exception:  # noqa: BLE001 - e.g. closed by __del__ at interpreter exit
                pass

else:
    tqdm = _auto_tqdm


def trange(*args, **kwargs):
    """`tqdm(range(*args), **kwargs)`."""
    return tqdm(range(*args), **kwargs)
