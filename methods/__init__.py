"""Built-in methods, one module per method.

Importing this package does no work: the registry imports every public module in
it (``benchmark.registry.available_methods``), and each registers itself with
``@register_method``. Modules whose name starts with ``_`` and ``base`` are shared code.
"""
