"""Data modules: each is a LightningDataModule that also tells models how to size themselves."""
