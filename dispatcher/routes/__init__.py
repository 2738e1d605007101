"""The dispatcher's routes other than invoke (`dispatcher/invoke.py`), one module per resource:
`functions` (deploy, list, get, delete), `jobs`, `keys` and `health` (healthz, readyz, metrics)."""
