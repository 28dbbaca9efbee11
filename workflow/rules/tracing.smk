# Rules of the tracing stage (placeholder until the stage lands).


def tracing_targets():
    return []
