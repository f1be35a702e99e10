"""HTML pages from the package's own template files (Jinja2, autoescaped), with their CSS and JS inlined.

The gallery and the review page are single self-contained files: they must open from disk with no
network, so their stylesheet and script are read from the package and written into the page.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2


@lru_cache(maxsize=None)
def _environment(package: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "static"),
        autoescape=jinja2.select_autoescape(["html", "htm", "j2"], default=True),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def static_text(package: str, name: str) -> str:
    """A file from ``<package>/static/``, such as ``gallery.css``."""
    return resources.files(package).joinpath("static", name).read_text(encoding="utf-8")


def render_page(package: str, template: str, **context: Any) -> str:
    """Render ``<package>/static/<template>``; ``static_text`` is available inside it to inline CSS and JS."""
    env = _environment(package)
    return env.get_template(template).render(static_text=lambda name: static_text(package, name), **context)
