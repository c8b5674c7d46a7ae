"""Sealed evaluation: every run's method executes in a worker process that never holds a label it may not see.

- :mod:`.foldstore` — the fold's training and validation images as a dataset of their own;
- :mod:`.audit` — the worker's PEP 578 audit hook (and what it cannot see);
- :mod:`.policy` — what the hook protects: the dataset folder and the cache;
- :mod:`.channel` — messages between the evaluator and the worker: JSON headers and raw arrays, never pickle;
- :mod:`.sandbox` — which sandbox (bubblewrap, Landlock, audit hook) and what a worker may read;
- :mod:`.landlock` — the kernel allowlist; :mod:`.outbox` — cache files carried back to the evaluator;
- :mod:`.worker` — the worker process; :mod:`.zygote` and :mod:`.preload` — where it is forked from;
  :mod:`.zygote_client` — the evaluator's handle on the zygote;
- :mod:`.executor` — the evaluator's side: start, hand over plates, check replies, contain failures;
- :mod:`.runs` — stores, policies and hosts for the runs of one dataset; :mod:`.limits` — time and memory.

User documentation: ``docs/sealed.md``. Import from the modules (this package imports nothing).
"""

