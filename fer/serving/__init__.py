"""The serving wing: the model holder, response schemas, routers, `create_app` and the server."""
