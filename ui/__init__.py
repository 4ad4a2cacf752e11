"""Shared pieces of the Streamlit dashboard: the store at the edge (``state``), cached loaders keyed by the store
version (``data``), URL-backed widgets (``url``), run filters (``filters``), Altair chart builders (``charts``), curve
and table shaping in pandas (``shape``) and table downloads (``downloads``).

Only this package and the page scripts import ``streamlit``; ``engine`` never does.
"""
