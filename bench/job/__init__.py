"""One job, from a validated config to final metrics:

    build      task, model and estimator from the config
    train      the Trainer: steps, optimisers, the interval meter's flushes
    meter      what is averaged and timed between logging steps
    objective  the loss of one step (estimator surrogate + beta * free-bits KL)
    schedules  beta(t) and the temperature schedule
    evaluate   val/*, grad/*, collapse/* at fixed parameters
    accel      precision and torch.compile of the model's forward pieces
    checkpoint the whole training state on disk, stop signals, resuming the same run
    runner     the Hydra job: validation, skip-if-done or resume, the MLflow run, failures
"""
