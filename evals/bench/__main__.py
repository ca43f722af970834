"""`make bench`: every benchmark in turn; each writes RESULTS_<name>.md next to it."""

import sys

from evals.bench import continual, eval_share, foreign_checkpoint, index_refresh, unlearning

for module in (index_refresh, eval_share, foreign_checkpoint, unlearning, continual):
    sys.argv = [module.__name__]
    module.main()
