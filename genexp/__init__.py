"""genexp: configuration-driven experiments for generative deep learning.

Importing the package is cheap on purpose: torch and Lightning are imported only by the
modules that train, so that `python -m genexp --cfg job` stays fast.
"""

__version__ = "0.1.0"
