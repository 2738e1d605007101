"""Build config for the optional C accelerator of the sandbox (everything else: pyproject.toml).

`flotilla/sandbox/_fastcall.c` makes each invocation one or two C calls instead of ~15 ctypes
calls. It is optional: if it does not compile (no compiler, no Python headers) the install
goes on and the sandbox uses its ctypes path (`flotilla bench sandbox` says which ran).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "flotilla.sandbox._fastcall",
            sources=["flotilla/sandbox/_fastcall.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall"],
            optional=True,
        )
    ]
)
