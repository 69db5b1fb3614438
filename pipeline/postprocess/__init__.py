"""Map products after prediction: Bayesian smoothing, regularization to a minimum mapping unit,
polygons with statistics, uncertainty layers and legends.

Pure functions on numpy arrays with thin I/O, like ``pipeline.cube``: frozen configs, readers of
windows with halos (``blocks``), compiled kernels apart (``_kernels``). Chunked and tiled
processing equals one pass over the whole map (exactly: see each module's proof).
"""
