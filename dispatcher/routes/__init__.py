"""The dispatcher's routes other than invoke (`dispatcher/invoke.py`), one module per resource:
`functions` (deploy, list, get, delete), `jobs`, `keys`, `secrets` and `health` (healthz,
readyz, metrics); `dispatcher.app.create_app` adds them."""
