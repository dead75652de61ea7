"""Learning layer: networks, SAC, dynamics models, TOM's estimators. Built on `tomrepro.core`."""
