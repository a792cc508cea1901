"""The cheapest HTTP answer uvicorn gives (raw ASGI, no framework): what the load generator can drive
at most on this machine, so its own ceiling is measured beside the API's figures."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
