"""Building guests into `function`-world components, one module per language.

`python` (componentize-py) today; every builder shares `common` (errors, results, the
content-addressed cache). The names below are the Python builder's, as before.
"""

from flotilla.build.common import BuildError, BuildResult, evictions, find_wit_dir
from flotilla.build.python import build, build_guest, cache_key, check_app

__all__ = [
    "BuildError",
    "BuildResult",
    "build",
    "build_guest",
    "cache_key",
    "check_app",
    "evictions",
    "find_wit_dir",
]
