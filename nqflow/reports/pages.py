"""The HTML pages and email bodies nqflow writes itself (the report index, alert emails), from
Jinja2 templates in ``templates/pages`` with autoescape on: a value is escaped by the template,
never by hand. (The notebook reports are nbconvert's, with the ``nqflow_report`` template.)
"""

from __future__ import annotations

from functools import lru_cache

import jinja2


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("nqflow.reports", "templates/pages"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the code forgot to pass fails, never renders empty
        keep_trailing_newline=True,
    )


def render(template: str, **context: object) -> str:
    """The page `template` (e.g. ``index.html.j2``) rendered with `context`."""
    return _environment().get_template(template).render(**context)
