"""Named seed offsets: every random draw of a run derives from its one seed.

Each draw that must not follow another's stream starts its own generator at ``seed +
OFFSET`` (the same seed then fixes the split, the initialisation, the batch order and
each of these). The values are part of every model trained so far: changing one changes
the models a seed gives.
"""

VALIDATION_SLICE = 7919
"""Training: the rows held out of a run to measure its validation loss on."""
REPLAY_SAMPLE = 7919
"""Warm start: which of the saved model's rows its rating head trains on again."""
RANKER_USERS = 7919
"""The ranking stage: the users whose held-aside rows the ranker learns from."""
RANKER_CARVE = 104_729
"""The ranking stage: the training rows carved out of its stage one's."""
JUDGED_USERS = 15_485_863
"""The ranking stage: the carved-out users whose lists judge each epoch of stage one."""
NEW_USERS = 7_368_787
"""The new-user evaluation: the users held out entirely."""


def extra_negatives_seed(seed: int, epoch: int, step: int) -> int:
    """The seed of one batch's extra negatives: fixed by (seed, epoch, step), so a run
    resumed mid-epoch draws the same ones."""
    return seed * 1_000_003 + epoch * 100_003 + step
