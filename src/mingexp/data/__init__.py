"""Data platform: WebDataset streaming of task mixtures, recipes for public datasets, the shapes world."""
