"""``apothic.Dict`` and ``apothic.Queue``: coordination objects held by the control plane.

Each is one long-running workflow on the control task queue (``workflows/_dict.py``,
``workflows/_queue.py``); see "Dict and Queue" in the architecture page.
"""
