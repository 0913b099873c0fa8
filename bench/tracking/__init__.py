"""The MLflow side of the harness, one concern per module:

    store      where the store is (`resolve_tracking_uri`), `retrying` outages,
               the experiment, paging through runs
    identity   config_hash, labels, git commit, the tag keys of a sweep
    handoff    what the launching process hands to its jobs
    sink       params, tags and the metric writer thread of a run
    callbacks  the Hydra callback owning a sweep's parent run and summary
    preflight  the config checked in the launching process, before the store
    liveness   heartbeats of open runs; RUNNING runs whose process died marked lost
"""
