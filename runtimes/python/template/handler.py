"""A new faaso function. Edit handle(); `faaso test` runs the tests in function.yml."""


def handle(event, context):
    name = event.query.get("name", "world")
    return {"statusCode": 200, "body": f"hello {name}\n",
            "headers": {"Content-Type": "text/plain; charset=utf-8"}}
