"""``glue``: hand a computed value to the book's prose (``{glue:text}`name```).

Uses ``myst_nb.glue`` where MyST-NB is installed (the book build), and does nothing where it is
missing (Colab), so a chapter runs the same everywhere.
"""

from __future__ import annotations

try:
    from myst_nb import glue as _glue
except ImportError:  # Colab and plain Jupyter: nothing reads glued values there
    _glue = None


def glue(name: str, value, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the book; hidden in the notebook unless ``display``.

    NumPy scalars are glued as plain Python numbers, so ``{glue:text}`name:.1f``` can format them.
    """
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if _glue is not None:
        _glue(name, value, display=display)


def show_source(*objects):
    """Display the source of library functions or classes in a notebook, highlighted: the book shows the
    code that ran, from the library itself, never a copy. Returns the ``IPython.display.Code`` object."""
    import inspect

    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(o).rstrip() for o in objects), language="python")


def labelled_audio(wave, rate: int, label: str):
    """An audio player with its label in one output (an HTML ``<figure>`` with a ``<figcaption>``), so a
    reader always knows which clip a player plays. ``wave`` is played as is (no normalisation)."""
    import html

    from IPython.display import HTML, Audio

    player = Audio(wave, rate=rate, normalize=False)._repr_html_()
    return HTML(f'<figure class="asc-audio"><figcaption>{html.escape(label)}</figcaption>{player}</figure>')
