"""Stand-ins and helpers shared by the tests: headless Chromium (Debian's, never a download) and
the reader's check of a report page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nqflow.paths import REPO_ROOT

SCREENSHOTS = REPO_ROOT / "outputs" / "screenshots"  # kept for review (outputs/ is git-ignored)

#: The flags that keep Chromium off the network in this closed sandbox (DESIGN "Facts").
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium(p, profile: Path, width: int = 1300, height: int = 1000):
    """A headless Chromium context (Playwright driving Debian's binary) with a fresh profile."""
    binary = shutil.which("chromium")
    if not binary:
        pytest.skip("Debian's chromium is not installed (.ci/ensure-chromium installs it as root)")
    return p.chromium.launch_persistent_context(
        str(profile),
        executable_path=binary,
        headless=True,
        viewport={"width": width, "height": height},
        args=CHROMIUM_ARGS,
    )


#: What a trader must never meet in a report (run in the page): `NaN`, a Python list literal, a
#: spread's raw `UD:` code in a table's headline column, a page or a table that scrolls sideways.
READER_CHECK = r"""() => {
  const problems = [];
  const text = document.body.innerText;
  for (const word of ["NaN", "None", "nan%"]) {
    if (new RegExp(`(^|[^A-Za-z])${word}([^A-Za-z]|$)`).test(text)) problems.push(`the text holds ${word}`);
  }
  const literal = text.match(/\[\s*'[^'\n]*'(\s*,\s*'[^'\n]*')*\s*\]/);
  if (literal) problems.push(`a Python list literal: ${literal[0].slice(0, 60)}`);
  const headline = ["symbol", "instrument", "package", "what"];
  for (const table of document.querySelectorAll("table")) {
    const heads = [...table.querySelectorAll("thead th")].map(th => th.innerText.trim().toLowerCase());
    heads.forEach((head, column) => {
      if (!headline.includes(head)) return;
      for (const row of table.querySelectorAll("tbody tr")) {
        const cell = row.children[column];
        if (cell && cell.innerText.includes("UD:")) problems.push(`UD: code in the ${head} column: ${cell.innerText}`);
      }
    });
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) problems.push("the page scrolls sideways");
  for (const element of document.querySelectorAll("body *")) {
    const style = getComputedStyle(element);
    if (["auto", "scroll"].includes(style.overflowX) && element.scrollWidth > element.clientWidth + 1) {
      problems.push(`a ${element.tagName.toLowerCase()}.${element.className} scrolls sideways`);
    }
  }
  return problems;
}"""


def reader_problems(page, url: str, screenshot: Path | None = None) -> list[str]:
    """Open `url` and return what a trader should not meet there (`READER_CHECK`)."""
    page.goto(url)
    page.wait_for_load_state("load")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return page.evaluate(READER_CHECK)
