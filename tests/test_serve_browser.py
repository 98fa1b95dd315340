"""`surgewatch serve` in a real browser: Debian's Chromium driven by Playwright, the real CLI as a process,
a real Valkey and a real loopback /metrics node."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import playwright  # noqa: F401  # in the test extra: a missing Playwright is a failure, not a skip
import pytest

from tests.serve_fixtures import (
    TOKEN,
    Serve,
    free_port,
    open_page,
    surgewatch,
    wait_text,
)


def test_the_page_shows_tiers_and_gpus_with_the_token_only_and_asks_nothing_of_other_hosts(world: Any,
                                                                                           browser: Any) -> None:
    """With ?token= the page shows every tier and the node's GPUs; without it 401; no request leaves the server."""
    valkey, node = world
    serve = Serve(valkey.url, node.url).start()
    try:
        host = f"127.0.0.1:{node.port}"
        page, requests = open_page(browser, serve.url + f"?token={TOKEN}")
        text = wait_text(page, "free rejected", "enterprise rejected", host, timeout_ms=60000)  # GPUs: panel 1 of 4
        assert all(f"{t} rejected" in text for t in ("plus", "pro", "team")) and "REJECTED %" in text
        assert TOKEN not in page.url  # accepted once, then a cookie
        cookie = page.context.cookies()[0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != TOKEN
        assert {urlsplit(u).netloc for u in requests} == {f"127.0.0.1:{serve.port}"}
        assert all(urlsplit(u).scheme in ("http", "ws") for u in requests)

        refused, _ = open_page(browser, serve.url)
        assert "Login needed" in refused.content()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(serve.url, timeout=10)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(serve.url + "?token=wrong", timeout=10)
        assert e.value.code == 401
        req = urllib.request.Request(serve.url + "health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert json.loads(urllib.request.urlopen(req, timeout=10).read())["viewers"] == 1
    finally:
        serve.stop()
    assert TOKEN not in serve.logs and "GET / 401" in serve.logs


def test_typing_edit_keys_in_the_page_changes_nothing_in_redis(world: Any, browser: Any) -> None:
    """e, digits and Enter typed into the page leave every quota and the audit log as they were."""
    import redis

    valkey, node = world
    client = redis.Redis.from_url(valkey.url, socket_timeout=5)
    before = {k: client.dump(k) for k in sorted(client.keys("*")) if client.type(k) != b"stream"}
    streams = {k: client.xlen(k) for k in client.keys("*") if client.type(k) == b"stream"}
    serve = Serve(valkey.url, node.url).start()
    try:
        page, _ = open_page(browser, serve.url + f"?token={TOKEN}")
        wait_text(page, "free")
        page.click("#screen")
        for _ in range(3):
            page.keyboard.type("e")
            page.keyboard.type("3/1d")
            page.keyboard.press("Enter")
            page.keyboard.press("Control+s")
        page.keyboard.press("Tab")
        page.keyboard.press("r")
        page.keyboard.press("Enter")
        frames = page.evaluate("() => window.surgewatch.frames()")
        page.wait_for_function("n => window.surgewatch.frames() > n + 1", arg=frames, timeout=30000)
    finally:
        serve.stop()
    after = {k: client.dump(k) for k in sorted(client.keys("*")) if client.type(k) != b"stream"}
    quota_keys = [k for k in before if b"quota" in k or b"tier" in k]
    assert quota_keys and {k: after.get(k) for k in quota_keys} == {k: before[k] for k in quota_keys}
    assert {k: client.xlen(k) for k in streams} == streams  # no audit entry
    client.close()


def test_the_page_says_it_is_stale_and_reconnects_by_itself_after_a_server_restart(world: Any, browser: Any) -> None:
    """Server gone: a DISCONNECTED banner over a dimmed screen; server back on its port: live frames again."""
    valkey, node = world
    serve = Serve(valkey.url, node.url).start()
    try:
        page, _ = open_page(browser, serve.url + f"?token={TOKEN}")
        wait_text(page, "free")
        serve.stop()
        page.wait_for_function("() => window.surgewatch.state() === 'down'", timeout=30000)
        assert "DISCONNECTED" in page.inner_text("#banner") and "stale" in page.evaluate("document.body.className")
        frames = page.evaluate("() => window.surgewatch.frames()")
        serve.start()
        page.wait_for_function("n => window.surgewatch.state() === 'live' && window.surgewatch.frames() > n",
                               arg=frames, timeout=60000)
        assert "stale" not in page.evaluate("document.body.className")
    finally:
        serve.stop()


def test_more_viewers_do_not_scrape_the_node_more_and_one_too_many_gets_a_clear_page(world: Any,
                                                                                     browser: Any) -> None:
    """The node is scraped as often with three viewers as with one; a viewer beyond --max-viewers is told so."""
    valkey, node = world
    serve = Serve(valkey.url, node.url, "--max-viewers", "3").start()

    def hits_over(seconds: float) -> float:
        start, t0 = node.hits, time.monotonic()
        time.sleep(seconds)
        return (node.hits - start) / (time.monotonic() - t0)

    try:
        first, _ = open_page(browser, serve.url + f"?token={TOKEN}")
        wait_text(first, "free")
        one = hits_over(6)
        others = [open_page(browser, serve.url + f"?token={TOKEN}")[0] for _ in range(2)]
        for p in others:
            wait_text(p, "free")
        three = hits_over(6)
        assert 0 < three <= one * 1.5 + 0.5, (one, three)  # a collection per viewer would be three times
        extra, _ = open_page(browser, serve.url + f"?token={TOKEN}")
        assert "full" in extra.content() and "--max-viewers 3" in extra.content()
    finally:
        serve.stop()


def test_unsafe_or_bad_starts_are_refused_with_exit_2() -> None:
    """A public address without a token, a bad port or size: exit 2 with a message, nothing listening."""
    r = surgewatch("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 2 and "without a token" in r.stderr
    r = surgewatch("serve", "--port", "70000")
    assert r.returncode == 2 and "--port" in r.stderr
    r = surgewatch("serve", "--size", "huge")
    assert r.returncode == 2 and "--size" in r.stderr
    r = surgewatch("serve", "--public-url", "ftp://x")
    assert r.returncode == 2 and "--public-url" in r.stderr
