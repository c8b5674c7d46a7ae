"""``python -m benchmark.gpu_check``: the whole check (the parent), or one ``--stage`` (a child it starts)."""

import signal
import sys

from . import main

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped by an outer `timeout`: still write the report
sys.exit(main())
