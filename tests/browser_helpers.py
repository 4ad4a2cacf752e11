"""What the browser tests share: a `streamlit run dashboard.py` server, Debian's Chromium, waits on what the page
shows (never on the clock), and what a failing test prints about the page.

`TRACKER_JS` goes into every page before Streamlit's own code (``add_init_script``). It watches the page's websocket
for the two messages that bound a full script run: the browser asking for one (BackMsg.rerun_script without a
fragment id; a fragment's timer asks with one) and the server saying one finished (ForwardMsg.script_finished,
FINISHED_SUCCESSFULLY or FINISHED_WITH_COMPILE_ERROR; a run stopped early for a newer rerun says
FINISHED_EARLY_FOR_RERUN and does not count). `idle` waits until a run finished after the last request: the page the
user sees then reflects every click and keystroke so far. The script-state attribute cannot tell this: on the Launch
page the jobs panel's fragment reruns every 1.5 s and flips it too. The tracker also records every sidebar
navigation the page showed and every dialog it opened, from the first paint on.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("ABLATION_LAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = Path(os.environ.get("ABLATION_LAB_ARTIFACTS", REPO / "test-artifacts"))
RUN_TIMEOUT_MS = 120_000  # one script run, on a loaded two-core machine; a pass takes a few seconds

# dashboard.py's router: (title, URL path) of each page, in menu order.
APP_NAV = [("Overview", ""), ("Launch", "launch"), ("Curves", "curves"), ("Tables", "tables"), ("Factors", "factors"),
           ("Report", "report"), ("Runs", "runs"), ("SQL", "sql")]

TRACKER_JS = r"""
(() => {
  if (window.top !== window || window.__abl) return;
  const t = window.__abl = {requested: 0, finished: 0, finishedFor: -1, navs: [], dialogs: []};
  // Protocol buffers, just enough to read a message's top-level fields (number -> varint or bytes).
  const varint = (b, i) => { let x = 0, m = 1, c;
    do { c = b[i++]; x += (c & 127) * m; m *= 128; } while (c & 128 && i < b.length);
    return [x, i]; };
  const fields = (b) => { const f = new Map(); let i = 0;
    while (i < b.length) {
      let tag, v; [tag, i] = varint(b, i); const wire = tag & 7, n = Math.floor(tag / 8);
      if (wire === 0) [v, i] = varint(b, i);
      else if (wire === 2) { let len; [len, i] = varint(b, i); v = b.subarray(i, i + len); i += len; }
      else if (wire === 1) { i += 8; continue; } else if (wire === 5) { i += 4; continue; } else break;
      f.set(n, v); }
    return f; };
  const bytes = (d) => d instanceof ArrayBuffer ? new Uint8Array(d)
    : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : null;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        const b = bytes(e.data);
        const status = b && fields(b).get(6);           // ForwardMsg.script_finished
        if (status === 0 || status === 1) { t.finished++; t.finishedFor = t.requested; }
      });
    }
    send(data) {
      const b = bytes(data);
      const rerun = b && fields(b).get(11);             // BackMsg.rerun_script, a ClientState
      if (rerun instanceof Uint8Array && !(fields(rerun).get(5) || []).length) t.requested++;  // no fragment_id
      return super.send(data);
    }
  };
  const nav = () => { const n = document.querySelector('[data-testid="stSidebarNav"]');
    return n ? Array.from(n.querySelectorAll('a')).map(a =>
      a.innerText.split('\n').filter(Boolean).pop() + ' /' + new URL(a.href).pathname.replace(/^\//, '')).join(', ')
      : ''; };
  const watch = () => {
    const s = nav();
    if (s && t.navs[t.navs.length - 1] !== s) t.navs.push(s);
    document.querySelectorAll('[role="dialog"]').forEach(d => {
      const x = d.innerText.trim(); if (x && !t.dialogs.includes(x)) t.dialogs.push(x); });
  };
  new MutationObserver(watch).observe(document, {subtree: true, childList: true, characterData: true,
                                                 attributes: true, attributeFilter: ['href', 'role']});
})();
"""

IDLE_JS = "() => !!window.__abl && window.__abl.finished > 0 && window.__abl.finishedFor === window.__abl.requested"

DESCRIBE_JS = r"""() => {
  const q = (s) => Array.from(document.querySelectorAll(s));
  const app = document.querySelector('[data-testid="stApp"]');
  const main = document.querySelector('[data-testid="stMain"]');
  return {
    url: location.href,
    script_state: app ? app.getAttribute('data-test-script-state') : null,
    runs: window.__abl ? {requested: window.__abl.requested, finished: window.__abl.finished,
                          finished_after_request: window.__abl.finishedFor} : null,
    sidebar: q('[data-testid="stSidebarNav"] a').map(a => [a.innerText.split('\n').filter(Boolean).pop(),
                                                          new URL(a.href).pathname]),
    navs_seen: window.__abl ? window.__abl.navs : null,
    dialogs_seen: window.__abl ? window.__abl.dialogs : null,
    exceptions: q('[data-testid="stException"]').map(e => e.innerText.slice(0, 1500)),
    job_cards: q('[class*="st-key-job-"]').map(e => e.innerText.replace(/\n+/g, ' | ')),
    main_text: main ? main.innerText.slice(0, 4000) : (document.body ? document.body.innerText.slice(0, 4000) : ''),
  };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(store_root: Path, log_path: Path, env: dict | None = None,
                     start_timeout_s: float = 90) -> Iterator[str]:
    """`streamlit run dashboard.py` on a free local port and the given store; yields its base URL once its health
    endpoint answers. The server's whole process group is gone afterwards."""
    port = free_port()
    full_env = {**os.environ, "ABLATION_LAB_STORE": str(store_root), "PYTHONPATH": str(REPO), **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"streamlit did not answer on {url} within {start_timeout_s:g} s:\n"
                                     + tail(log_path))
            try:  # the pause between two probes is a wait on the server process: it ends early if the server dies
                code = proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"streamlit exited with {code} before answering:\n" + tail(log_path))
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


def tail(path: Path, n: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError as e:
        return f"({path}: {e})"


def idle(page, timeout: float = RUN_TIMEOUT_MS) -> None:
    """Wait until the script runs this page asked for are over (see the module's docstring): after a click or a
    committed input, the page then shows that input's outcome. Needs TRACKER_JS in the page."""
    page.wait_for_function(IDLE_JS, timeout=timeout, polling=100)


def sidebar_nav(page) -> list[tuple[str, str]]:
    """(title, URL path) of each link in the sidebar navigation, as shown."""
    return [(title, path.lstrip("/")) for title, path in page.locator('[data-testid="stSidebarNav"] a').evaluate_all(
        "els => els.map(a => [a.innerText.split('\\n').filter(Boolean).pop(), new URL(a.href).pathname])")]


def wait_for_app_nav(page, timeout: float = RUN_TIMEOUT_MS) -> None:
    """Wait until the sidebar shows dashboard.py's navigation (APP_NAV), exactly."""
    want = ", ".join(f"{title} /{path}" for title, path in APP_NAV)
    page.wait_for_function(
        """want => { const n = document.querySelector('[data-testid="stSidebarNav"]');
            return !!n && Array.from(n.querySelectorAll('a')).map(a => a.innerText.split('\\n').filter(Boolean).pop()
              + ' /' + new URL(a.href).pathname.replace(/^\\//, '')).join(', ') === want; }""",
        arg=want, timeout=timeout, polling=100)


def navs_seen(page) -> list[str]:
    """Every sidebar navigation the page showed since it loaded, as 'Title /path, ...' strings."""
    return page.evaluate("() => window.__abl ? window.__abl.navs : []")


def dialogs_seen(page) -> list[str]:
    return page.evaluate("() => window.__abl ? window.__abl.dialogs : []")


def charts_drawn(page, timeout: float = RUN_TIMEOUT_MS) -> None:
    """Wait until every Vega-Lite chart shown on the page has drawn (a canvas or svg with a size)."""
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).every(c =>
              c.offsetParent === null  // in a tab not shown: it draws when the tab opens
              || Array.from(c.querySelectorAll('canvas, svg')).some(e => e.getBoundingClientRect().width > 0))""",
        timeout=timeout, polling=100)


def next_frames(page) -> None:
    """Wait for the browser to lay out and paint what changed (two animation frames)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r())))")


def describe(page) -> str:
    """What the page holds, for a failing test's output: URL, run state, sidebar, dialogs, errors, the main text."""
    try:
        d = page.evaluate(DESCRIBE_JS)
    except Exception as e:  # a closed or crashed page: say so instead of hiding the test's own error
        return f"(could not read the page: {type(e).__name__}: {e})"
    lines = [f"url: {d['url']}", f"script state: {d['script_state']}; full runs: {d['runs']}",
             "sidebar: " + (", ".join(f"{t} {p}" for t, p in d["sidebar"]) or "(no navigation)")]
    if d["navs_seen"]:
        lines.append("sidebar navigations shown since load:\n  " + "\n  ".join(d["navs_seen"]))
    if d["dialogs_seen"]:
        lines.append("dialogs shown: " + " | ".join(d["dialogs_seen"]))
    for e in d["exceptions"]:
        lines.append("exception on the page:\n" + e)
    for card in d["job_cards"]:
        lines.append("job card: " + card)
    lines.append("main text:\n" + d["main_text"])
    return "\n".join(lines)


def screenshot(page, name: str) -> Path | None:
    """The page as a PNG under test-artifacts/ (git-ignored); None when the page cannot be captured."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception as e:
        print(f"(no screenshot: {type(e).__name__}: {e})")
        return None
    return path


def report_failure(page, name: str, extra: str = "") -> None:
    """Print what the page held (and ``extra``, e.g. the job queue's records) and save a screenshot."""
    shot = screenshot(page, f"failure-{name}")
    print(f"\n===== what the page held ({name}) =====\n{describe(page)}")
    if extra:
        print(extra)
    if shot:
        print(f"screenshot: {shot}")


def reports_page(test):
    """Decorator for a test that takes a ``page`` fixture: when it fails, print what that page held and save a
    screenshot (in the test's call phase, so pytest shows it with the failure)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        try:
            return test(*args, **kwargs)
        except BaseException:
            report_failure(kwargs["page"], test.__name__)
            raise
    return run
