"""Catalog stage: find each sensor's items and parse them into Acquisitions.

``static.find_acquisitions`` is the entry point (static catalogs, item collections and STAC APIs,
with the run's saved item list); ``search`` holds the STAC API client and its retrying HTTP,
``items`` the filters, parsing and the saved list, ``tiles`` the MGRS tile ids, ``sensors`` and
``profiles`` the sensor descriptions. Nothing is imported here, so that importing one module does
not pull in the others (and the manifest model may import from this package).
"""
