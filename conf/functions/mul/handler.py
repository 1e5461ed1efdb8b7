"""mul: multiplies numbers.

GET /mul?a=2&b=3 -> 6 (every query value counts); POST /mul with [2, 3, 4] -> 24.
Anything that is not a number is a 400 with a JSON message.
"""

import json
import math

JSON = {"Content-Type": "application/json"}


class BadInput(ValueError):
    pass


def _number(text, where):
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise BadInput(f"{where} is not a number: {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{where} is not a finite number: {text!r}")
    return value


def numbers(event):
    if event.method == "GET":
        return [_number(v, f"query parameter {k!r}") for k, v in event.query_all.items()]
    try:
        data = json.loads(event.body or b"null")
    except ValueError:
        raise BadInput("body must be a JSON array of numbers") from None
    if not isinstance(data, list):
        raise BadInput("body must be a JSON array of numbers")
    for i, item in enumerate(data):
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise BadInput(f"item {i} is not a number: {json.dumps(item)}")
    return data


def handle(event, context):
    if event.method not in ("GET", "POST"):
        return {"statusCode": 405, "headers": {**JSON, "Allow": "GET, POST"},
                "body": {"error": f"method {event.method} not allowed; use GET or POST"}}
    try:
        values = numbers(event)
    except BadInput as exc:
        return {"statusCode": 400, "headers": JSON, "body": {"error": str(exc)}}
    return {"statusCode": 200, "headers": JSON, "body": json.dumps(math.prod(values))}
