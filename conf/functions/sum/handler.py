"""sum: adds numbers.

GET /sum?a=2&b=3 -> 5: every query value counts, whatever its name (?n=1&n=2 -> 3).
POST /sum with a JSON array: [1, 2, 3.5] -> 6.5. No numbers at all -> 0.
The answer is a JSON number (ints stay ints). Anything that is not a number is a 400 with a JSON
message saying what was wrong; methods other than GET and POST get a 405.
"""

import json
import math
from typing import Any

JSON_HEADERS = {"Content-Type": "application/json"}
BODY_RULE = "body must be a JSON array of numbers"


class BadInput(ValueError):
    """The request does not hold numbers; the message says why."""


def check_number(value: Any, where: str, shown: str) -> int | float:
    # bool is an int subclass and JSON lets NaN/Infinity through: none of them is a number here.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise BadInput(f"{where} is not a number: {shown}")
    return value


def query_number(name: str, text: str) -> int | float:
    try:
        value = json.loads(text)  # the body's number syntax: 2, -1.5, 1e3
    except ValueError:
        value = None
    return check_number(value, f"query parameter {name!r}", repr(text))


def numbers(event: Any) -> list[int | float]:
    if event.method == "GET":
        return [query_number(name, text) for name, text in event.query_all.items()]
    try:
        data = json.loads(event.body)
    except ValueError:
        raise BadInput(f"{BODY_RULE}; the body is not JSON") from None
    if not isinstance(data, list):
        raise BadInput(BODY_RULE)
    return [check_number(item, f"item {i}", json.dumps(item)) for i, item in enumerate(data)]


def reply(status: int, payload: Any, **headers: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **headers},
        "body": json.dumps(payload, allow_nan=False),
    }


def handle(event: Any, context: Any) -> dict[str, Any]:
    if event.method not in ("GET", "POST"):
        error = f"method {event.method} is not allowed; use GET or POST"
        return reply(405, {"error": error}, Allow="GET, POST")
    try:
        total = sum(numbers(event))
    except BadInput as exc:
        return reply(400, {"error": str(exc)})
    try:
        return reply(200, total)
    except ValueError:  # overflowed to infinity, or an int too long to write out
        return reply(400, {"error": "the sum is too large"})
