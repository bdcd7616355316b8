"""Event logs: the contract, the simulator and its hidden world."""
