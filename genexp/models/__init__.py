"""Generative LightningModules, one per objective; named model configs specialise them."""
