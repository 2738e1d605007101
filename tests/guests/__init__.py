"""Test guests: Python guests (tests/guests/python, built by `tests.guests.build`) and WAT guests."""
