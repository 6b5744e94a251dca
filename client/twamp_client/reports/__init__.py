"""Reporters: each turns :class:`~twamp_client.measurement.Measurement` results into output.

``text`` is ping-like (a line per packet as it comes, then the summary), ``json`` the stable
machine-readable document, ``raw`` a CSV row per packet with its four timestamps, ``table`` one
line per target after a run of many.  Exporters of the monitor are reporters of the same kind.
"""
