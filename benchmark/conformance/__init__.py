"""Conformance: what `bench methods check` asks of a method, and the watches behind its diagnoses."""
