"""The seed system: El-kafrawy et al., CMES 2022 (doi 10.32604/cmes.2022.021713), reproduced.

``autoencoder`` (the networks), ``insecure_cipher`` (the paper's two readings of
its cipher, E = Z^2 + K^2 and E = (Z + K)^2, and their breaks; hazardous,
reproduction only), ``classifier`` (the paper's CNN), ``roundtrip`` (one image
through the pipeline), ``sweep`` (the 16 permutations), ``paper_epochs`` (the
three detailed cases at 10, 25 and 50 epochs, resumable). See docs/paper.md.

Everything here needs ``radseal[paper]`` (PyTorch); importing the package
without it is one clear error, not a traceback.
"""

from radseal.extras import require

require("torch", "paper", "the 2022 paper's autoencoder and cipher")
