"""autoloss: the loss is the part of nnU-Net that nnU-Net does not configure. autoloss measures the dataset,
recommends a loss, searches losses with real nnU-Net trainings and exports the winner as a trainer."""

__version__ = "0.1.0"
