"""Helpers for tests and benchmarks: seeded synthetic scenes in the real sensor layouts.

``pipeline.testing.generators`` writes small COGs and STAC items exactly as THEIA, Sen2Cor
(Earth Search, Planetary Computer), USGS Landsat Collection 2 and S1Tiling name them.
"""
