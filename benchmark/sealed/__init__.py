"""Sealed evaluation: every run's method executes in a worker process that never holds a label it may not see.

- :mod:`.foldstore` — the fold's training and validation images as a dataset of their own;
- :mod:`.audit` — the worker's PEP 578 audit hook (and what it cannot see);
- :mod:`.policy` — what the hook protects: the dataset folder and the cache;
- :mod:`.channel` — messages and arrays between the evaluator and the worker;
- :mod:`.worker` — the worker process; :mod:`.forkserver` and :mod:`.preload` — where it is forked from;
- :mod:`.executor` — the evaluator's side: start, hand over plates, contain failures;
- :mod:`.runs` — stores, policies and hosts for the runs of one dataset; :mod:`.limits` — time and memory.

User documentation: ``docs/sealed.md``. Import from the modules (this package imports nothing).
"""

