"""Federated optimisation: strategies, the round loop and its jobs, local updates, masked aggregation."""
