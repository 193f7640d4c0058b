"""genexp: configuration-driven experiments for generative deep learning.

Importing the package is cheap on purpose: torch and Lightning are imported only by the
modules that train, so that `python -m genexp --cfg job` stays fast.
"""

__version__ = "0.1.0"

import os

# OpenMP threads that wait for work sleep instead of spinning. Spinning threads take the cores
# that other processes (DataLoader workers, a second run, anything else on the machine) need: a
# default run took 4-5 times as long beside two busy processes (scripts/benchmark.py,
# `default_run_loaded`). It takes effect only if set before torch is first imported, hence here;
# a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
