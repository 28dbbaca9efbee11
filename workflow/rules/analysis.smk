# Rules of the analysis stage (placeholder until the stage lands).


def analysis_targets():
    return []
