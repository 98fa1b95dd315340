"""The pages `surgewatch serve` sends: self-contained HTML (inline style and script, no font or file from
anywhere), every URL relative to the page or built from --public-url (`{base}`), the script run by the
response's CSP nonce (`{nonce}`). Times are UTC with a `Z`, as on the console's screen. The footer is the
page's: the keys (and buttons) a browser does send, not the console's terminal keys."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>surgewatch wall</title>
<style>
html, body { margin: 0; height: 100%; background: #000; color: #ddd; font-family: monospace; overflow: hidden; }
/* one height for the key bar and the room left under the screen: the wall's last row never hides behind it */
:root { --keys-font: max(12px, 1.1vw); --keys-height: calc(2.4 * var(--keys-font)); }
#screen { position: fixed; left: 0; right: 0; top: 0; bottom: var(--keys-height); display: flex;
  align-items: center; justify-content: center; }
#screen svg { width: 100%; height: 100%; }
#keys { position: fixed; left: 0; right: 0; bottom: 0; height: var(--keys-height); display: flex; align-items: center;
  justify-content: center; gap: .6em; font-size: var(--keys-font); background: #111; color: #aaa; }
#keys button { font: inherit; font-weight: bold; color: #fa0; background: #222; border: 1px solid #444;
  border-radius: 4px; padding: 0 .6em; cursor: pointer; }
#banner { position: fixed; left: 0; right: 0; top: 0; display: none; z-index: 2; padding: .5em 1em;
  font-size: max(16px, 2.4vw); font-weight: bold; text-align: center; background: #c00; color: #fff; }
body.stale #screen { opacity: .35; filter: grayscale(1); }
body.stale #banner { display: block; }
#wait { position: fixed; inset: 0; display: flex; align-items: center; justify-content: center; font-size: 3vw; }
</style></head>
<body class="stale"><div id="banner">Connecting…</div><div id="screen"><div id="wait">connecting…</div></div>
<div id="keys"><button data-cmd="pause">space</button><span>pause/resume the panel cycle</span>
<button data-cmd="prev">←</button><button data-cmd="next">→</button><span>previous/next panel</span>
<span>· read-only: nothing here changes a quota</span></div>
<script nonce="{nonce}">
(function () {
  "use strict";
  var base = "{base}";
  var screen = document.getElementById("screen"), banner = document.getElementById("banner");
  var ws = null, lastAt = 0, frameS = 1, retryMs = 1000, frames = 0, state = "connecting";
  // UTC with a Z, as the console's own times: never the browser's zone beside a screen in UTC
  function clock(ms) { return ms ? new Date(ms).toISOString().slice(11, 19) + "Z" : "the start"; }
  function stale(text) { document.body.classList.add("stale"); banner.textContent = text; }
  function fresh() { document.body.classList.remove("stale"); }
  window.surgewatch = {
    frames: function () { return frames; },
    state: function () { return state; },
    text: function () { return screen.textContent.replace(/\\u00a0/g, " "); }
  };
  function wsUrl() {
    var u = new URL("ws", new URL(base, location.href));
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  }
  function full(max) {
    state = "full";
    document.body.className = "";
    document.body.innerHTML = "<div id='wait'><div><h1>This wall console is full</h1><p>It already has " + max +
      " viewers (surgewatch serve --max-viewers " + max + "). Close another tab, or ask for a higher limit," +
      " then reload this page.</p></div></div>";
  }
  function connect() {
    state = state === "live" ? "down" : state;
    ws = new WebSocket(wsUrl());
    ws.binaryType = "blob";
    ws.onmessage = function (ev) {
      lastAt = Date.now();
      if (typeof ev.data === "string") {
        var m = JSON.parse(ev.data);
        if (m.type === "hello") { frameS = m.frame_s || 1; retryMs = 1000; state = "live"; }
        else if (m.type === "full") { full(m.max); }
        else if (m.type === "tick" && frames) { fresh(); }
        else if (m.type === "refused") { console.warn("surgewatch serve refused a message: " + m.reason); }
        return;
      }
      new Response(ev.data.stream().pipeThrough(new DecompressionStream("gzip"))).text().then(function (svg) {
        screen.innerHTML = svg;
        frames += 1;
        fresh();
      });
    };
    ws.onclose = function () {
      if (state === "full") { return; }
      state = "down";
      stale("DISCONNECTED: what you see is from " + clock(lastAt) + " and is not updating. Reconnecting…");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    };
  }
  setInterval(function () {
    var quiet = (Date.now() - lastAt) / 1000;
    if (state === "live" && quiet > Math.max(5, frameS * 5)) {
      stale("NO UPDATE for " + Math.round(quiet) + " s: what you see is from " + clock(lastAt) + ". Waiting…");
    }
  }, 1000);
  // the only keys sent: the wall's panel cycle (space pauses, arrows change panel); nothing else is read
  function send(cmd) { if (ws && ws.readyState === 1) { ws.send(JSON.stringify({cmd: cmd})); } }
  document.addEventListener("keydown", function (e) {
    var cmd = e.key === " " ? "pause" : e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : null;
    if (cmd) { send(cmd); e.preventDefault(); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("#keys button"), function (b) {
    b.addEventListener("click", function () { send(b.getAttribute("data-cmd")); b.blur(); });
  });
  connect();
})();
</script></body></html>
"""

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>surgewatch: login needed</title>
</head><body style="background:#000;color:#ddd;font-family:monospace;font-size:20px;padding:2em">
<h1>Login needed</h1><p>Open this address with <code>?token=TOKEN</code> once (the token given to
<code>surgewatch serve --token</code> or SURGEWATCH_SERVE_TOKEN), or send <code>Authorization: Bearer TOKEN</code>.</p>
</body></html>
"""

FULL_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>surgewatch: wall full</title>
</head><body style="background:#000;color:#ddd;font-family:monospace;font-size:20px;padding:2em">
<h1>This wall console is full</h1><p>It already has {max} viewers (surgewatch serve --max-viewers {max}).
Close another tab, or ask for a higher limit, then reload this page.</p></body></html>
"""
