"""Reports: one method's runs, its figures and embeddings, and dataset montages."""
