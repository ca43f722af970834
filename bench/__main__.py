"""`make bench`: every benchmark in turn; each writes RESULTS_<name>.md next to it."""

import sys

from bench import continual, eval_share, foreign_checkpoint, index_refresh, status_load, unlearning

for module in (index_refresh, status_load, eval_share, foreign_checkpoint, unlearning, continual):
    sys.argv = [module.__name__]
    module.main()
