"""Profile-level methods: features to well profiles, corrections, TVN, intensity statistics and correction metrics."""
