"""tomrepro: reproduce and analyse Transition Occupancy Matching (TOM) for model-based RL."""

__version__ = "0.1.0"
