from __future__ import annotations

import pytest

from faaso.spec.routing import Match, RouteTable

TABLE = RouteTable(
    {"/sum": "sum", "/api/v1": "api", "/api": "apiroot", "/mul": "mul"},
    {"sum", "mul", "api", "apiroot", "hello", "hello.dev", "only.dev"},
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/sum", Match("sum", "/")),
        ("/sum/", Match("sum", "/")),
        ("/sum/anything", Match("sum", "/anything")),
        ("/sum/a/b/", Match("sum", "/a/b/")),
        ("/sum/a%2Fb", Match("sum", "/a%2Fb")),
        ("/summary", None),
        ("/su", None),
        ("/", None),
        ("/api", Match("apiroot", "/")),
        ("/api/v2", Match("apiroot", "/v2")),
        ("/api/v1", Match("api", "/")),
        ("/api/v1/x/y/z", Match("api", "/x/y/z")),
        ("/api/v10", Match("apiroot", "/v10")),
        ("/function/hello", Match("hello", "/")),
        ("/function/hello/", Match("hello", "/")),
        ("/function/hello/x/y", Match("hello", "/x/y")),
        ("/function/hello.openfaas-fn/x", Match("hello", "/x")),
        ("/function/hello.other/x", None),
        ("/function/hello.dev/x", Match("hello.dev", "/x")),  # another namespace: its key
        ("/function/only.dev", Match("only.dev", "/")),
        ("/function/only", None),  # the default namespace has no 'only'
        ("/function/only.openfaas-fn", None),
        ("/function/hello.", None),
        ("/function/nope", None),
        ("/function/", None),
    ],
)
def test_resolve(path: str, expected: Match | None) -> None:
    assert TABLE.resolve(path) == expected


def test_root_route_catches_everything_else() -> None:
    table = RouteTable({"/": "web", "/sum": "sum"}, {"web", "sum"})
    assert table.resolve("/") == Match("web", "/")
    assert table.resolve("/index.html") == Match("web", "/index.html")
    assert table.resolve("/sum/x") == Match("sum", "/x")
    assert table.resolve("/summary") == Match("web", "/summary")


def test_empty_table() -> None:
    assert RouteTable({}, {"a"}).resolve("/a") is None
    assert RouteTable({}, {"a"}).resolve("/function/a") == Match("a", "/")
