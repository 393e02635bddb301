"""The verdict's rules and the words of its calls: constants only, cheap for ``plan`` and the suite schema to read."""

# The settings own these defaults; re-exported for the report's modules.
from bench.config import DEFAULT_MIN_EFFECT as DEFAULT_MIN_EFFECT
from bench.config import DEFAULT_SEED_BATCH as DEFAULT_SEED_BATCH
from bench.config import DEFAULT_SPENDING as DEFAULT_SPENDING
from bench.config import SPENDING as SPENDING
from bench.config import SPENDING_OBRIEN_FLEMING as SPENDING_OBRIEN_FLEMING
from bench.config import SPENDING_POCOCK as SPENDING_POCOCK

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

