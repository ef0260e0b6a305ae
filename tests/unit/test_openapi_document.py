"""The OpenAPI document states what the service enforces: bounds on every integer, a schema for
every response, the API key on every /v1 route, the cursor's 400 (built offline, no Ray)."""

import re
from typing import Any

from serving.app import api

I64 = 2**63 - 1


def _doc() -> dict[str, Any]:
    return api.openapi()


def _integers(node: Any, where: str = "") -> list[tuple[str, dict]]:
    """Every ``{"type": "integer"}`` schema in ``node``, with where it is."""
    out = []
    if isinstance(node, dict):
        if node.get("type") == "integer":
            out.append((where, node))
        for k, v in node.items():
            out += _integers(v, f"{where}/{k}")
    elif isinstance(node, list):
        for k, v in enumerate(node):
            out += _integers(v, f"{where}/{k}")
    return out


def test_every_integer_declares_both_bounds_within_int64():
    found = _integers(_doc())
    assert len(found) > 15
    loose = [w for w, s in found if "minimum" not in s and "exclusiveMinimum" not in s]
    loose += [w for w, s in found if "maximum" not in s and "exclusiveMaximum" not in s]
    assert not loose, loose
    # As integers: a float 2**63 - 1 is 2.0**63, which the validation refuses.
    assert all(isinstance(s.get("maximum", 0), int) for _, s in found)
    assert max(s["maximum"] for _, s in found) == I64


def test_every_response_has_a_json_schema_and_every_v1_route_needs_the_key():
    doc = _doc()
    assert doc["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code, resp in op["responses"].items():
                assert resp["content"]["application/json"]["schema"], (path, method, code)
            if path.startswith("/v1/"):
                assert op["security"] == [{"ApiKey": []}], (path, method)
                assert {"401", "413", "429", "503"} <= set(op["responses"]), (path, method)


def test_the_feed_documents_its_cursor_its_400_and_its_item_shape():
    doc = _doc()
    feed = doc["paths"]["/v1/feed/{user_id}"]["get"]
    assert {"400", "404", "422"} <= set(feed["responses"])
    params = {p["name"]: p for p in feed["parameters"]}
    assert {"user_id", "limit", "cursor", "debug"} == set(params)
    item = doc["components"]["schemas"]["FeedItem"]
    assert set(item["required"]) == {
        "post_id", "author_id", "created_at", "media_kind", "source", "position", "renditions"
    }  # fmt: skip
    page = doc["components"]["schemas"]["FeedPage"]
    assert {"next_cursor", "session", "page"} <= set(page["required"])
    rendition = doc["components"]["schemas"]["Rendition"]
    assert {"variant", "format", "width", "height", "bytes", "url"} == set(rendition["required"])


def test_an_event_is_one_of_its_kinds():
    schemas = _doc()["components"]["schemas"]
    events = schemas["EventBatch"]["properties"]["events"]
    assert events["maxItems"] == 100
    assert set(events["items"]["discriminator"]["mapping"]) == {
        "impression", "dwell", "like", "comment", "save"
    }  # fmt: skip
    assert "dwell_s" in schemas["DwellEvent"]["required"]


def test_a_rendition_variant_admits_every_width_render_can_name():
    """An original narrower than every width asked for gets one at its own width (the demo asks
    for 640 and 320, so a 242-px photo is w242): the
    document must admit it, or a schema check fails on a real page (a CI run did)."""
    from media.images import widths_for

    variant = _doc()["components"]["schemas"]["Rendition"]["properties"]["variant"]
    names = ["thumb", "full"] + [f"w{w}" for w in (*widths_for(4000), *widths_for(242, (640, 320)))]
    assert "w242" in names
    for name in names:
        assert re.fullmatch(variant["pattern"], name), name
    for bad in ("w0", "w", "large", "w1080px"):
        assert not re.fullmatch(variant["pattern"], bad), bad
