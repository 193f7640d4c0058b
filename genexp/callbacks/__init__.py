"""Callbacks written against the generative-module protocol (see genexp.models.base)."""
