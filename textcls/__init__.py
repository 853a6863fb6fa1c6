"""textcls: fine-tune, export and serve transformer text classifiers."""

__version__ = "0.1.0"
