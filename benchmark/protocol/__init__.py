"""The protocol: a method's folds and seeds run, scored plate by plate and written as records."""
