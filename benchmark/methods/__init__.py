"""Built-in methods; importing this package registers them (one module per method)."""
