"""Datasets: the labels of TAU Urban Acoustic Scenes 2022 Mobile and generated scenes."""

# Index order used by the DCASE2024 baseline and the paper's code.
SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
# Real devices a, b, c; simulated s1-s6 (s4-s6 appear only in the test split).
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague",
          "stockholm", "vienna")
