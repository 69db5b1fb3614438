"""Decision fusion: several class maps of the same area (models of one run, one per seed, or the
maps of earlier runs, one per sensor) combined per pixel by majority vote or Dempster-Shafer.

``kernels`` holds the pure per-pixel rules; ``sources`` reads the sources' maps and confusion
matrices; ``config`` is the ``fusion`` section as the run reads it.
"""
