"""sitsflow: satellite image time series to maps, on dask.

The import package is ``pipeline``; each stage is a subpackage (catalog, cube, samples, learn,
predict, validate) and ``run`` ties them together. ``model`` holds the data types they share.
"""

__version__ = "0.1.0"
