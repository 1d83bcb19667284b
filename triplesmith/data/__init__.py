"""Dataset loaders, splits and the embedded sample dataset."""
