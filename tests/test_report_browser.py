"""The rendered page in a real headless Chromium: every figure loads, nothing errors, nothing is fetched."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.report_fixtures import build_store

from bench.report import render_report


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = _chromium()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (install the Debian package 'chromium')"
)

# A strict policy makes any network fetch a reported violation instead of a silent request.
_POLICY = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
)

_PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  var where = t && t !== window ? t.tagName + ' ' + String(t.src || t.href || '').slice(0, 80) : '';
  window.__problems.push('error: ' + (e.message || where));
}, true);
window.addEventListener('securitypolicyviolation', function (e) {
  window.__problems.push('blocked fetch: ' + e.blockedURI);
});
['error', 'warn'].forEach(function (level) {
  var original = console[level];
  console[level] = function () {
    window.__problems.push('console.' + level + ': ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt; });
  var sizes = images.map(function (i) { return [i.naturalWidth, i.naturalHeight]; });
  var out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify({images: images.length, broken: broken, sizes: sizes,
                                    problems: window.__problems});
  document.body.appendChild(out);
});
</script>"""

_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)


def _chrome(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    db = build_store(root / "quick.db", backbones=("resnet18", "vit_tiny"))
    return render_report(db, root / "report").html_path


def test_every_image_loads_and_nothing_errors(page: Path, tmp_path: Path) -> None:
    text = page.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("<head>", "<head>" + _POLICY + _PROBE, 1), encoding="utf-8")
    done = _chrome(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path / "profile")
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert match, f"probe did not report (exit {done.returncode}); stderr tail:\n{done.stderr[-2000:]}"
    result = json.loads(html.unescape(match.group(1)))
    assert result["images"] == text.count("<img ")
    assert result["images"] >= 4
    assert result["broken"] == []
    assert all(width > 0 and height > 0 for width, height in result["sizes"])
    assert result["problems"] == []


def test_screenshot_is_a_real_page(page: Path, tmp_path: Path) -> None:
    import matplotlib.image

    shot = tmp_path / "report.png"
    done = _chrome(
        [f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=10000", page.as_uri()],
        tmp_path / "profile",
    )
    assert shot.is_file(), f"no screenshot (exit {done.returncode}); stderr tail:\n{done.stderr[-2000:]}"
    assert shot.stat().st_size > 20_000
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    # A blank or error page is nearly one colour; a rendered report has text, tables and figures.
    assert pixels[..., :3].std() > 0.05
