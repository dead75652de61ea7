"""Analysis layer: claims measured on data, datasets, figures. Built on the layers below."""
