"""Loops that drive environments and learners; built on `tomrepro.core`."""
