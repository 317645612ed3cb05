"""Data: sources, non-IID partition over clients, federated preprocessing."""
