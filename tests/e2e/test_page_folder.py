"""Why the page files live in `app_pages/`, not `pages/` (docs/architecture.md): with a folder
named `pages/` beside the main script, Streamlit serves a freshly started server's first request
to a page's URL (a bookmark) by running that page's file alone, around the app's `st.navigation`
router (`streamlit.runtime.scriptrunner.script_runner._mpa_v1`, Streamlit 1.67). Under any other
name the router runs first, every time. Shown here on a two-page app in a real server and browser;
if a Streamlit release changes this, the first case fails and `pages/` becomes possible."""

from __future__ import annotations

import os

import pytest

from tests.e2e.browser import CHROMIUM, chromium_page, settle, start_streamlit, stop, wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")

ROUTER = """import streamlit as st
st.session_state["router"] = "ran"
st.navigation([st.Page("{folder}/first.py", default=True), st.Page("{folder}/second.py")]).run()
"""
PAGE = """import streamlit as st
st.title("{name}")
st.markdown("router: " + st.session_state.get("router", "not run"))
"""


CASES = [("pages", "not run"), ("app_pages", "ran")]  # (page folder, what the page says of the router)


@pytest.fixture(scope="module", params=CASES, ids=[folder for folder, _ in CASES])
def app(request, tmp_path_factory):
    """A freshly started two-page app whose pages are in `folder`; (url, what the page should say
    of the router). (Module scope: the health check runs before the test's network guard.)"""
    folder, router = request.param
    root = tmp_path_factory.mktemp(folder)
    (root / folder).mkdir()
    (root / "streamlit_app.py").write_text(ROUTER.format(folder=folder))
    for name in ("first", "second"):
        (root / folder / f"{name}.py").write_text(PAGE.format(name=name))
    log = root / "streamlit.log"
    server, url = start_streamlit({**os.environ}, log, folder=root)
    try:
        wait_healthy(url, server, log)
        yield url, router
    finally:
        stop(server)


def test_a_first_request_straight_to_a_page(app):
    url, router = app
    with chromium_page() as page:
        page.goto(f"{url}/second")  # the server's first session, straight to a page
        settle(page)
        assert page.get_by_role("heading", name="second").count() == 1
        assert f"router: {router}" in page.inner_text('[data-testid="stMain"]')
