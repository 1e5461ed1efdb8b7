"""A new faaso function. Edit handle(); the tests in function.yml run against it.

handle(event, context) follows OpenFaaS's python3-http template (it may also be `async def`):
event.method, event.path, event.query (first values), event.query_all (every value),
event.headers (case-insensitive), event.body (bytes); context.hostname.
Return a str (text/plain), bytes, a dict/list/number (JSON), None (empty 200), or
{"statusCode": 201, "headers": {...}, "body": ...} to choose the status and headers.
"""


def handle(event, context):
    if event.method == "POST":
        return event.body  # echo the request body back
    name = event.query.get("name", "world")
    return f"hello {name}"
