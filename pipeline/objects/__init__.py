"""Objects: segments of the grid (computed per chunk with a halo and stitched, or given) and
their zonal statistics, the features of object-based classification.

``segments`` segments chunks and stitches them into ids stable across reruns; ``zonal`` sums
features per segment blockwise (mean and standard deviation, exact whatever the chunking).
"""
