"""The split's latent codes in TensorBoard's embedding projector (PCA, t-SNE, UMAP in the
browser), with each point's label as metadata and its image as the thumbnail."""

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from genexp.callbacks.latent import Codes, LatentView


class LatentProjector(LatentView):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_points": "int >= 1"}
    tag = "latent_projector"
    needs_images = False

    def __init__(self, n_points: int = 500, thumbnails: bool = True, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.n_points = n_points
        self.thumbnails = thumbnails

    def applies(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        return super().applies(trainer, pl_module) and any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        datamodule = trainer.datamodule
        codes = Codes(pl_module, datamodule, split, self.n_points)
        thumbnails = None
        if self.thumbnails and hasattr(datamodule, "to_images"):
            thumbnails = datamodule.to_images(codes.x).float().cpu()
            if thumbnails.shape[1] == 1:  # the projector's sprite sheet is RGB
                thumbnails = thumbnails.expand(-1, 3, -1, -1)
        metadata = [str(int(y)) for y in codes.labels.cpu()]
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_embedding(codes.z.float().cpu(), metadata=metadata, label_img=thumbnails,
                                                global_step=trainer.global_step, tag=f"{self.tag}/{name}")
