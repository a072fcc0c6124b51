"""The engine's contract suite (issue 2, the public API): one file per part of it.

A package, so its module names can't collide with tests elsewhere in tests/.
"""
