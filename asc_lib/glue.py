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


def labelled_audio(wave, rate: int, label: str, clip: str | None = None):
    """An audio player with its label in one output (an HTML ``<figure>`` with a ``<figcaption>``), so a
    reader always knows which clip a player plays. ``wave`` is played as is, unless it goes beyond full
    scale (resampling a clip that peaks at 1.0 can overshoot by about 10 %): it is then scaled down to peak
    at 1.0, and the label says so. A wave that is not finite is an error naming ``clip`` (the file it came
from; default ``label``)."""
    import html

    import numpy as np
    from IPython.display import HTML, Audio

    wave = np.asarray(wave, dtype=np.float32)
    if wave.size == 0 or not np.isfinite(wave).all():
        raise ValueError(f"audio player for {clip or label}: expected finite samples, got "
                         f"{'no samples' if wave.size == 0 else f'{int((~np.isfinite(wave)).sum())} NaN or inf'}")
    peak = float(np.abs(wave).max())
    if peak > 1.0:
        wave, label = wave / peak, f"{label} (scaled by 1/{peak:.3f} to play: it peaks above full scale)"
    player = Audio(wave, rate=rate, normalize=False)._repr_html_()
    # the player's own name for a screen reader: its caption
    player = player.replace("<audio ", f'<audio aria-label="{html.escape(label)}" ', 1)
    return HTML(f'<figure class="asc-audio"><figcaption>{html.escape(label)}</figcaption>{player}</figure>')
