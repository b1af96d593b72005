"""The demo: a generated registry with every kind of drift, and its ground truth."""
