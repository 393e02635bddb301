"""The verdict's rules and the words of its calls: constants only, cheap for ``plan`` and the suite schema to read."""

# One percentage point: about the seed-to-seed spread of a small fine-tuning run and one test
# image in a hundred; a smaller gain rarely justifies changing how a model is trained. A suite
# can change it under ``verdict: {min_effect: ...}``.
DEFAULT_MIN_EFFECT = 0.01

# Family-wise error rate for the per-arm table: the usual 5%, matching the 95% intervals.
ALPHA = 0.05

# With two pairs the t interval has one degree of freedom (its multiplier is 12.7) and an exact
# sign-flip p-value cannot go below 0.5; three pairs is the least at which either says anything.
MIN_PAIRS_FOR_CALL = 3

CALL_TRANSFER = "transfer wins"
CALL_SCRATCH = "scratch wins"
CALL_EQUIVALENT = "equivalent"
CALL_UNCLEAR = "no clear difference"
CALL_TOO_FEW = "no clear difference (n too small)"
CALL_INCONCLUSIVE = "inconclusive"
CALL_NO_SCRATCH = "no scratch baseline"
CALL_NO_TRANSFER = "no transfer runs"
CALL_NO_VALIDATION = "no validation accuracy to choose an arm"

# Seeds added where a call is open (bench.report.sequential). Pocock-type spending spends early,
# where a sequential design saves its seeds and where a call at the planned seeds stays possible;
# O'Brien-Fleming-type keeps nearly all of it for the last look and rarely stops early.
SPENDING_POCOCK = "pocock"
SPENDING_OBRIEN_FLEMING = "obrien-fleming"
SPENDING = (SPENDING_POCOCK, SPENDING_OBRIEN_FLEMING)
DEFAULT_SPENDING = SPENDING_POCOCK
# Two seeds a round: one seed moves a t interval little, and every round waits for its slowest run.
DEFAULT_SEED_BATCH = 2
