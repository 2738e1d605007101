"""Dev mode: the dispatcher and the worker in one process, with no services to install.

It sits on top of both (`stack` wires them, `memory` is the in-process transport) and is
imported only by `flotilla dev`, the load tests and the tests.
"""
