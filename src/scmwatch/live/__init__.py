"""The live runner (``scmwatch watch``): followed sources, network listeners, checkpoints,
alert delivery and metrics."""
