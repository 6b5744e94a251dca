"""``twamp-monitor``: many targets measured on their schedules, for as long as it runs.

Modules: ``config`` (the INI file, checked with file, line, key and allowed values),
``scheduler`` (when each target runs: a random first offset, never overlapping, overruns to the
next period boundary), ``notify`` (sd_notify), ``daemon`` (the loop around the engine) and
``__main__`` (the command line).
"""
