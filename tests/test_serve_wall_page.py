"""The served wall as a viewer and an attacker meet it in Debian's Chromium (Playwright): what the page shows
(no window chrome, no missing glyph, keys a browser sends, UTC times), who may open its websocket, what a
crafted message gets, and what a hostile exporter label becomes; the real CLI as a process, a real Valkey,
real loopback /metrics nodes and a second loopback web server for the foreign page."""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import playwright  # noqa: F401  # in the test extra: a missing Playwright is a failure, not a skip

from sim.valkey import ValkeyProcess
from tests.serve_fixtures import PAGE, TOKEN, Serve, open_page, surgewatch, wait_text
from tui.testing import MetricsNode, multiply_page

HOSTILE_TERMINAL = "A\x1b]2;PWNED\x07B\x1b[8mHIDDEN"
HOSTILE_MARKUP = "<b>B</b><script>x()</script>"  # as much as the model column shows
# every non-ASCII glyph on screen drawn in the page's font, compared with the browser's missing-glyph box
MISSING_GLYPHS = """() => {
  const texts = Array.from(document.querySelectorAll('#screen svg text'));
  const chars = Array.from(new Set(Array.from(texts.map(t => t.textContent).join(''))))
    .filter(c => c.trim() && c.codePointAt(0) > 127);
  const family = getComputedStyle(texts[0]).fontFamily;
  const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 64;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  function draw(c) { g.clearRect(0, 0, 64, 64); g.font = '40px ' + family; g.fillText(c, 4, 48);
    return Array.from(g.getImageData(0, 0, 64, 64).data).join(','); }
  const boxes = ['\\u{10FFFD}', '\\uE0FF', '\\u{E01EF}'].map(draw);  // code points no font has
  return chars.filter(c => boxes.includes(draw(c)));
}"""
CRAFTED = ['{"cmd":["pause"]}', "not json", "[1, 2]", '{"cmd": "rm -rf"}', '{"cmd": {"name": "pause"}}']
SEND_CRAFTED = """async messages => {
  const out = {refused: [], closeCode: null};
  const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; setTimeout(bad, 10000); });
  const closed = new Promise(ok => { ws.onclose = e => { out.closeCode = e.code; ok(); }; setTimeout(ok, 15000); });
  const answered = new Promise(ok => {
    ws.onmessage = e => { if (typeof e.data !== 'string') return; const m = JSON.parse(e.data);
      if (m.type === 'refused') { out.refused.push(m.reason); if (out.refused.length === messages.length) ok(); } };
    setTimeout(ok, 15000);
  });
  messages.forEach(m => ws.send(m));
  await answered;
  ws.send('x'.repeat(100000));
  await closed;
  return out;
}"""


class ForeignSite:
    """A second web server on loopback (another port: another origin, the same site) whose page tries to
    open the wall's websocket; what it got is left in `window.result`."""

    def __init__(self, ws_url: str) -> None:
        html = ("<!doctype html><title>elsewhere</title><script>var r = window.result = {opened: false, "
                "messages: 0, closed: null}; var ws = new WebSocket(" + repr(ws_url) + "); ws.onopen = () => "
                "{ r.opened = true; }; ws.onmessage = () => { r.messages += 1; }; ws.onclose = e => "
                "{ r.closed = e.code; };</script>").encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def handshake_status(port: int, origin: str | None) -> int:
    """The status a websocket handshake with the token and `origin` gets (101: opened)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": f"Bearer {TOKEN}"}
    conn.request("GET", "/ws", headers={**headers, **({"Origin": origin} if origin is not None else {})})
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_page_from_another_origin_cannot_open_the_wall_with_the_viewers_cookie(world: Any, browser: Any) -> None:
    """Logged in, the viewer opens a page on another loopback port: its websocket is refused; the wall still works."""
    valkey, node = world
    serve = Serve(valkey.url, node.url).start()
    foreign = ForeignSite(f"ws://127.0.0.1:{serve.port}/ws")
    try:
        page, _ = open_page(browser, serve.url + f"?token={TOKEN}")
        wait_text(page, "free")
        other = page.context.new_page()  # the same browser profile: the cookie would go along
        other.goto(foreign.url)
        other.wait_for_function("() => window.result.closed !== null", timeout=30000)
        assert other.evaluate("() => window.result") == {"opened": False, "messages": 0, "closed": 1006}
        for origin in ("null", "http://evil.example", f"http://127.0.0.1:{serve.port + 1}"):
            assert handshake_status(serve.port, origin) == 403, origin
        assert handshake_status(serve.port, f"http://127.0.0.1:{serve.port}") == 101
        frames = page.evaluate("() => window.surgewatch.frames()")
        page.wait_for_function("n => window.surgewatch.frames() > n", arg=frames, timeout=30000)
    finally:
        foreign.close()
        serve.stop()
    assert "websocket refused: Origin" in serve.logs


def test_crafted_websocket_messages_are_refused_by_name_and_never_reach_the_log_as_a_traceback(
        world: Any, browser: Any) -> None:
    """A list as command, non-JSON, unknown commands: refused with a reason; 100 kB: closed as too big."""
    valkey, node = world
    serve = Serve(valkey.url, node.url).start()
    try:
        page, _ = open_page(browser, serve.url + f"?token={TOKEN}")
        wait_text(page, "free")
        out = page.evaluate(SEND_CRAFTED, CRAFTED)
        assert len(out["refused"]) == len(CRAFTED) and all(out["refused"]), out
        assert out["closeCode"] is not None  # the server closes it (1009, or 1006 if cut mid-send)
        frames = page.evaluate("() => window.surgewatch.frames()")
        page.wait_for_function("n => window.surgewatch.frames() > n", arg=frames, timeout=30000)
    finally:
        serve.stop()
    assert "Traceback" not in serve.logs and "TypeError" not in serve.logs
    assert serve.logs.count("websocket message refused") == len(CRAFTED) + 1 and "over 4096 bytes" in serve.logs


def test_a_hostile_model_name_reaches_the_page_as_visible_text_and_never_runs(valkey: ValkeyProcess,
                                                                               browser: Any) -> None:
    """Escape sequences and markup in modelName: seen as text on the wall, no control character, nothing run."""
    assert surgewatch("--redis", valkey.url, "init").returncode == 0
    # two nodes, each GPU with a UUID of its own (a UUID seen at two addresses is one GPU that moved)
    pages = [multiply_page(PAGE.replace("Tesla V100-SXM2-32GB", name), 2).replace("-000000000000", f"-00000000000{i}")
             for i, name in enumerate((HOSTILE_TERMINAL, HOSTILE_MARKUP))]
    with MetricsNode(pages[0]) as one, MetricsNode(pages[1]) as two:
        serve = Serve(valkey.url, f"{one.url},{two.url}").start()
        try:
            page, _ = open_page(browser, serve.url + f"?token={TOKEN}")
            text = wait_text(page, "PWNED", "<b>B</b><scrip", timeout_ms=60000)  # the GPUs panel: 1 of 4
            assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
            assert page.evaluate("() => document.querySelectorAll('#screen b, #screen script').length") == 0
            assert page.title() == "surgewatch wall"
        finally:
            serve.stop()


def test_the_wall_page_has_no_window_chrome_no_missing_glyph_and_offers_keys_that_work(world: Any,
                                                                                      browser: Any) -> None:
    """The page: the terminal's cells only, every glyph in its font, a footer of browser keys that change panel and
    hides none of the screen."""
    valkey, node = world
    serve = Serve(valkey.url, node.url).start()
    try:
        page, _ = open_page(browser, serve.url + f"?token={TOKEN}", viewport={"width": 1920, "height": 1080})
        text = wait_text(page, "free", "surgewatch")
        screen_bottom, keys_top = page.evaluate("() => [document.querySelector('#screen svg').getBoundingClientRect()"
                                                ".bottom, document.querySelector('#keys').getBoundingClientRect().top]")
        assert screen_bottom <= keys_top + 0.5, (screen_bottom, keys_top)  # the wall's last row above the key bar
        assert page.evaluate("() => document.querySelectorAll('#screen svg circle, #screen svg [class$=title]')"
                             ".length") == 0
        assert page.evaluate(MISSING_GLYPHS) == []
        assert "Quit" not in text and "palette" not in text  # the console's terminal keys
        keys = page.inner_text("#keys")
        assert "space" in keys and "←" in keys and "→" in keys
        page.keyboard.press(" ")
        paused = re.search(r"CYCLE PAUSED on \w[\w ]* \((\d)/(\d)\)", wait_text(page, "CYCLE PAUSED"))
        assert paused is not None
        shown, panels = int(paused.group(1)), int(paused.group(2))
        page.keyboard.press("ArrowRight")
        wait_text(page, f"({shown % panels + 1}/{panels})")
        page.click("#keys button[data-cmd=prev]")
        wait_text(page, f"({shown}/{panels})")
        assert page.evaluate(MISSING_GLYPHS) == []  # the paused line's glyph too
        strict = browser.new_context().new_page()  # the page's CSP enforced: its script runs by nonce
        answer = strict.goto(serve.url + f"?token={TOKEN}")
        assert "'unsafe-inline'" not in answer.headers["content-security-policy"].split("script-src")[1].split(";")[0]
        strict.wait_for_function("() => window.surgewatch.frames() > 0", timeout=30000)
    finally:
        serve.stop()


def test_the_disconnected_banner_says_utc_and_the_log_has_access_lines_but_no_scrapes(world: Any,
                                                                                     browser: Any) -> None:
    """In a browser in Los Angeles the banner's time ends in Z; serve's log has no httpx line per scrape."""
    valkey, node = world
    serve = Serve(valkey.url, node.url).start()
    try:
        page, _ = open_page(browser, serve.url + f"?token={TOKEN}", timezone_id="America/Los_Angeles",
                            locale="en-US")
        wait_text(page, "free")
        hits = node.hits
        page.wait_for_function("() => window.surgewatch.frames() > 2", timeout=30000)
        assert node.hits > hits  # scraped meanwhile
        serve.stop()
        page.wait_for_function("() => window.surgewatch.state() === 'down'", timeout=30000)
        banner = page.inner_text("#banner")
        assert re.search(r"from \d\d:\d\d:\d\dZ", banner) and "AM" not in banner and "PM" not in banner, banner
    finally:
        serve.stop()
    assert "surgewatch.serve.access GET / " in serve.logs
    assert "httpx" not in serve.logs and "httpcore" not in serve.logs
