"""Building guests into `function`-world components, one module per language.

`detect` tells a guest's language and builds any of them (`build_source`, behind `flotilla
build`); `python` (componentize-py) is always here, and `rust`, `js` (JavaScript and
TypeScript) and `c` are imported by name when a guest of theirs is built. Every builder
shares `common` (errors, results, the content-addressed cache). `build`, `build_guest`,
`cache_key` and `check_app` are the Python builder's, as before.
"""

from flotilla.build.common import BuildError, BuildResult, evictions, find_wit_dir
from flotilla.build.detect import (
    LANGUAGES,
    Source,
    ToolchainMissing,
    build_source,
    detect_language,
    missing_toolchain,
)
from flotilla.build.python import build, build_guest, cache_key, check_app

__all__ = [
    "LANGUAGES",
    "BuildError",
    "BuildResult",
    "Source",
    "ToolchainMissing",
    "build",
    "build_guest",
    "build_source",
    "cache_key",
    "check_app",
    "detect_language",
    "evictions",
    "find_wit_dir",
    "missing_toolchain",
]
