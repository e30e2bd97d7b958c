"""warpd: the supervisor that runs one process per schema, and warpctl, which controls it.

``main``      the ``warpd`` command
``master``    the supervisor's loop: signals, reaping, heartbeats, reload, shutdown
``states``    one schema process's life as a state machine (tested without forking)
``system``    fork, waitpid, kill and the clocks, behind one small object
``worker``    what a forked schema process does (init_process, then the engine)
``control``   the control socket's server side; ``protocol`` its wire format
``commands``  warpctl's verbs, answered by the supervisor; ``report`` what status shows
``sdnotify``  systemd's notification protocol
``warpctl``   the command line client; ``display`` its tables
"""
