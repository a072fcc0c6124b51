"""Reliability tests (issue 5): model/fuzz, faults, soak, shutdown under load.

A package, so its module names can't collide with tests elsewhere in tests/.
"""
