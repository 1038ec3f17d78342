"""Forward models that make test data with known answers."""
