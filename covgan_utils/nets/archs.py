"""The names of the network families and the width lists each takes: the vocabulary a config is checked
against, importable without Keras (the builders are in `families`)."""

ARCHS = ("paper", "lean", "style", "fastgan", "r3gan")
# (generator, discriminator) width-list lengths per family (0: the widths are not used, the paper's are fixed).
WIDTH_COUNTS = {"paper": (0, 0), "lean": (5, 5), "style": (6, 6), "fastgan": (6, 5), "r3gan": (6, 6)}
WIDTH_MEANING = {
    "paper": "its widths are fixed",
    "lean": "G: one per doubling 8 -> 128; D: one per halving 128 -> 4",
    "style": "one per resolution 4 -> 128, G and D",
    "fastgan": "G: one per resolution 4 -> 128; D: one per halving 64 -> 4 after the 128 stem",
    "r3gan": "G: one per resolution 4 -> 128; D: one per resolution 128 -> 4",
}
