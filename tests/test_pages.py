"""The demo page and the docs, through the test client: served whole by the service, nothing from elsewhere."""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin

from flask.testing import FlaskClient

# An absolute URL in src/href/url(): something the browser would fetch from another host.
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:https?:)?//""", re.I)
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def assets_of(client: FlaskClient, page: str) -> dict[str, str]:
    """The page and every script and stylesheet it links, fetched from the service."""
    html = client.get(page).get_data(as_text=True)
    fetched = {page: html}
    for link in ASSET.findall(html):
        url = urljoin(f"http://localhost{page}", link)
        if url.endswith((".js", ".css")):
            response = client.get(url)
            assert response.status_code == 200, url
            fetched[url] = response.get_data(as_text=True)
    return fetched


def test_demo_page_is_html_with_its_own_script_and_style(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    fetched = assets_of(client, "/")
    assert {"http://localhost/demo/demo.js", "http://localhost/demo/demo.css"} <= set(fetched)
    assert 'type="file"' in fetched["/"] and 'accept="image/*"' in fetched["/"]
    assert 'name="viewport"' in fetched["/"]  # laid out for phone screens


def test_demo_page_links_nothing_outside_the_service(client: FlaskClient) -> None:
    for url, text in assets_of(client, "/").items():
        assert not EXTERNAL.search(text), url
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy


def test_docs_redirect_to_swagger_ui_served_by_the_service(client: FlaskClient) -> None:
    redirect = client.get("/docs")
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith("/docs/")
    fetched = assets_of(client, "/docs/")
    assert any(url.endswith("/docs/swagger-ui-bundle.js") for url in fetched)
    for url, text in fetched.items():
        if url.endswith(".js"):
            continue  # Swagger UI's bundle mentions URLs in code it does not run here (see the browser test)
        assert not EXTERNAL.search(text), url
    assert "default-src 'self'" in client.get("/docs/").headers["Content-Security-Policy"]


def test_docs_load_this_services_document_and_no_online_validator(client: FlaskClient) -> None:
    html = client.get("/docs/").get_data(as_text=True)
    config = json.loads(re.search(r"var user_config = (\{.*?\});", html).group(1))  # type: ignore[union-attr]
    assert config["url"] == "/openapi.json"
    assert config["validatorUrl"] is None


def test_unknown_asset_is_a_json_404(client: FlaskClient) -> None:
    for path in ("/docs/missing.js", "/demo/missing.css", "/demo/../app.py"):
        response = client.get(path)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
