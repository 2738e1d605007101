"""Route modules of the HTTP API, one per area; `dispatcher.app.create_app` adds them."""
