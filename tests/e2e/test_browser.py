"""The demo page and the dashboard in a real browser: headless Chromium on two nodes and Redis.

One Chromium for the module (Debian's, driven by playwright-core from tests/node; see
``browser.py``), two ``hubplane serve`` nodes with the built-in demo hub on one private Redis,
the admin API and the dashboard on. Screenshots go to ``<pytest's basetemp>/screenshots`` (and,
when ``HUBPLANE_SCREENSHOTS`` names a folder, there too: that is how docs/images/ is refreshed).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, _ensure_node_modules
from tests.e2e.browser import Browser, Page
from tests.e2e.test_cluster import unique

pytestmark = pytest.mark.e2e

TOKEN = "dashboard-test-token"
HUB = "/hubs/demo"
FIRST_TEXT_INPUT = "input[type=text]"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with _OPENER.open(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if response.headers.get_content_type() == "application/json" else body


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _ensure_node_modules()  # tests/node (playwright-core) and server/static (the bundle)
    chromium = Browser()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def nodes(redis_server: Any, module_hubplane_server: Any) -> list[Any]:
    """Two nodes of one cluster serving the demo (no --hub), the admin API and the dashboard."""
    env = {"REDIS_URL": redis_server.url, "HUBPLANE_CHANNEL_PREFIX": unique("browser") + ":"}
    args = ["--admin-token", TOKEN, "--dashboard"]
    return [module_hubplane_server({}, ready_path=HUB, extra_args=args, env=env) for _ in range(2)]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    yield folder
    extra = os.environ.get("HUBPLANE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        for shot in folder.glob("*.png"):
            shutil.copy(shot, Path(extra) / shot.name)


def node_ids(node: Any) -> list[str]:
    """The live nodes' full ids, as /_hubplane/nodes gives them."""
    return sorted(n["id"] for n in get(f"{node.url}/_hubplane/nodes", TOKEN)["nodes"])


def say(page: Page, text: str) -> None:
    """Type a line in the page's first text input and press Enter, as a person would."""
    page.fill(FIRST_TEXT_INPUT, text)
    page.press(FIRST_TEXT_INPUT, "Enter")


def log_has(text: str) -> str:
    return f"document.getElementById('log').innerText.includes({json.dumps(text)})"


def open_demo(browser: Browser, name: str, url: str) -> Page:
    page = browser.open(name, url)
    page.wait("document.body.dataset.state === 'connected'", timeout=15)
    return page


def test_two_browsers_on_two_nodes_chat(browser: Browser, nodes: list[Any], shots: Path) -> None:
    one, two = nodes
    # ann's page keeps every default (a generated name, the lobby); bob's names himself
    ann = open_demo(browser, "ann", one.url + "/")
    bob = open_demo(browser, "bob", two.url + "/?name=bob")
    try:
        name = ann.evaluate("document.getElementById('name').value")
        assert name.startswith("guest-"), name
        assert ann.evaluate("document.getElementById('room').value") == "lobby"
        # the page runs on the official client, the bundle npm installed
        version = json.loads(
            (REPO_ROOT / "server/static/node_modules/@microsoft/signalr/package.json").read_text()
        )["version"]
        assert ann.evaluate("typeof window.signalR.HubConnectionBuilder") == "function"
        assert ann.evaluate("window.signalR.VERSION") == version
        bundle = REPO_ROOT / "server/static/node_modules/@microsoft/signalr/dist/browser"
        assert get(one.url + "/demo/signalr.min.js") == (bundle / "signalr.min.js").read_bytes()

        # each side names the node that serves it: the two live nodes, by their full ids
        sides = [
            ann.evaluate("document.body.dataset.node"),
            bob.evaluate("document.body.dataset.node"),
        ]
        assert sorted(sides) == node_ids(one) and sides[0] != sides[1]
        assert ann.text("#node") == sides[0]

        say(ann, "hello from node one")
        bob.wait(log_has("hello from node one"))
        say(bob, "hi ann, bob on node two here")
        ann.wait(log_has("bob on node two here"))
        assert ann.evaluate("document.getElementById('message').value") == ""

        # who is online: both, on both pages, each with the node that serves it
        for page in (ann, bob):
            members = "document.getElementById('members').innerText"
            page.wait(f"{members}.includes('bob') && {members}.includes({json.dumps(name)})")
            assert page.text("#member-count") == "2"
            titles = page.evaluate(
                "[...document.querySelectorAll('#members .node')].map(e => e.title).sort()"
            )
            assert titles == sorted(sides)
            assert page.wait(
                "[...document.querySelectorAll('#rooms li')].some("
                "li => li.innerText.startsWith('#lobby') && li.innerText.endsWith('2'))"
            )
        say(ann, "rooms are groups; who is online comes from presence")
        bob.wait(log_has("who is online comes from presence"))
        ann.screenshot(shots / "demo-node-one.png")
        bob.screenshot(shots / "demo-node-two.png")
        assert ann.errors() == [] and bob.errors() == []
    finally:
        ann.close()
        bob.close()


def test_dashboard_shows_every_live_node_and_updates(
    browser: Browser, nodes: list[Any], shots: Path
) -> None:
    one, two = nodes
    ids = node_ids(one)
    dash = browser.open("dashboard", f"{one.url}/_hubplane/dashboard#token={TOKEN}")
    chats: list[Page] = []
    try:
        dash.wait("Number(document.body.dataset.updates) >= 1", timeout=15)
        # the token left the address bar, and the page lists every live node by its full id
        assert dash.evaluate("location.hash") == ""
        assert sorted(dash.evaluate("document.body.dataset.nodes").split()) == ids
        rows = dash.evaluate(
            "[...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node)"
        )
        assert sorted(rows) == ids
        for node_id in ids:
            assert node_id in dash.text("#nodes")
        before = int(dash.evaluate("document.body.dataset.connections"))
        updates = int(dash.evaluate("document.body.dataset.updates"))

        # clients connect (one on each node): the dashboard shows them without a reload
        chats.append(open_demo(browser, "carol", two.url + "/?name=carol&room=kitchen"))
        dash.wait(f"document.body.dataset.connections === '{before + 1}'", timeout=10)
        chats.append(open_demo(browser, "dave", one.url + "/?name=dave&room=kitchen"))
        dash.wait(f"document.body.dataset.connections === '{before + 2}'", timeout=10)
        for chat in chats:
            say(chat, "is the dashboard watching?")
        assert int(dash.evaluate("document.body.dataset.updates")) > updates
        dash.wait(
            "[...document.querySelectorAll('#groups tbody tr')].some("
            "r => r.innerText.includes('kitchen') && r.innerText.trim().endsWith('2'))",
            timeout=10,
        )
        for node_id in ids:  # both nodes now hold a client
            dash.wait(
                f"document.querySelector('#nodes tr[data-node=\"{node_id}\"] td.num')"
                ".innerText === '1'"
            )
        assert "WebSockets" in dash.text("#hubs") and HUB in dash.text("#hubs")
        assert "connected" in dash.text("#nodes")
        # the chart has drawn its two lines
        assert dash.evaluate("document.querySelectorAll('#chart polyline').length") == 2
        dash.screenshot(shots / "dashboard.png", full_page=True)
        assert dash.errors() == [] and all(chat.errors() == [] for chat in chats)

        # without the token the page asks for it, and shows the cluster once given
        ask = browser.open("ask", f"{two.url}/_hubplane/dashboard")
        try:
            ask.wait("!document.getElementById('login').hidden")
            assert ask.evaluate("document.getElementById('panels').hidden") is True
            ask.fill("#token", "wrong")
            ask.press("#token", "Enter")
            ask.wait("document.getElementById('login-error').innerText.includes('refused')")
            ask.fill("#token", TOKEN)
            ask.press("#token", "Enter")
            ask.wait("Number(document.body.dataset.updates) >= 1")
            assert sorted(ask.evaluate("document.body.dataset.nodes").split()) == ids
            # the refused token's 401 is the only console error
            assert [e for e in ask.errors() if "401" not in e] == []
        finally:
            ask.close()
    finally:
        dash.close()
        for chat in chats:
            chat.close()


def opens(page: Page, url: str) -> str:
    """``open`` or ``refused``: what becomes of a WebSocket the page opens to ``url``."""
    return str(
        page.evaluate(
            "new Promise(resolve => { const ws = new WebSocket(" + json.dumps(url) + ");"
            " ws.onopen = () => { ws.close(); resolve('open'); };"
            " ws.onerror = () => resolve('refused'); })"
        )
    )


def test_cookies_reach_a_hub_socket_from_its_own_site_only(
    browser: Browser, nodes: list[Any]
) -> None:
    """Cross-site WebSocket hijacking: both nodes are on 127.0.0.1, so a cookie set by a page of
    one is sent to the other too, and a page of one node is another origin for the other."""
    one, two = nodes
    # A page of node one without a CSP (the demo's would stop sockets to other ports).
    page = browser.open("site-one", one.url + "/healthz")
    own, other = (n.url.replace("http://", "ws://") + HUB for n in (one, two))
    try:
        assert opens(page, other) == "open"  # no cookies: a token client, never refused
        page.evaluate("document.cookie = 'session=s3cret; path=/'")
        assert opens(page, own) == "open"  # its own site, with cookies
        assert opens(page, other) == "refused"  # another origin, with cookies: 403
        # The demo page keeps working with a cookie of its own site.
        demo = open_demo(browser, "with-cookie", one.url + "/?name=erin")
        try:
            demo.evaluate("document.cookie = 'session=s3cret; path=/'")
            demo.goto(one.url + "/?name=erin")
            demo.wait("document.body.dataset.state === 'connected'", timeout=15)
            assert demo.errors() == []
        finally:
            demo.close()
    finally:
        page.close()
