"""Layer 6, analysis: studying data and comparing finished runs.

`explore` (the `explore.py` study of a data source) and `report` (the `report.py`
comparison of run directories). The top layer: nothing in the package imports it.
"""
