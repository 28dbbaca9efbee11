# Rules of the editing stage (placeholder until the stage lands).


def editing_targets():
    return []
