"""``bench sweep``: the grid methods × splits × folds × seeds as independent units, one sealed run each.

- :mod:`.grid` — units, the settings they share, the default methods, who waits for whom;
- :mod:`.plan` — names checked, finished units found by the protocol's own resume check, the order;
- :mod:`.schedule` — longest first, never before a unit's prerequisite;
- :mod:`.unit` — one unit through :func:`benchmark.protocol.loop.run_protocol`, wherever it runs;
- :mod:`.local` — the ``local`` (worker processes) and ``debug`` (in process) executors;
- :mod:`.slurm` — the ``slurm`` executor (submitit job arrays), :mod:`.slurm_config` its settings;
- :mod:`.progress` — the live table and the summary; :mod:`.runner` — one call that runs a plan.

User documentation: ``docs/cluster.md``. Import from the modules (this package imports nothing).
"""
