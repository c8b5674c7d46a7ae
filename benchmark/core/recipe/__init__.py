"""The BN-method taxonomy: a recipe's axes (batches, training BN, loss, validation and test BN) and their choices."""
