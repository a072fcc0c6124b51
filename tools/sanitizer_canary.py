"""Run one seeded bug of tools/sanitizer_canary.c (see tools/sanitize.sh).

Usage: python tools/sanitizer_canary.py CANARY.so canary_race|canary_overflow|canary_ubsan
"""

import ctypes
import sys
import threading

lib = ctypes.CDLL(sys.argv[1])
which = sys.argv[2]
if which == "canary_race":
    # ctypes releases the GIL around the call: both threads run the loop at once.
    threads = [threading.Thread(target=lib.canary_race, args=(2_000_000,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
elif which == "canary_overflow":
    lib.canary_overflow(16)
elif which == "canary_ubsan":
    lib.canary_ubsan(1)
else:
    sys.exit(f"unknown canary {which!r}")
