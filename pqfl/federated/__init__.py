"""Federated optimisation: local updates, masked aggregation, method rules."""
