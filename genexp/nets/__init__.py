"""Plain nn.Modules (encoders, decoders, generators, critics); they know nothing of training."""
