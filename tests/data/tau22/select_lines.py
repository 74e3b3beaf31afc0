"""Write this folder's split files: lines taken unchanged from the official DCASE2024 Task 1 split files.

    python tests/data/tau22/select_lines.py SOURCE_DIR

SOURCE_DIR holds the official split5.csv, split10.csv, split25.csv, split50.csv and test.csv (copies are in
the authors' repository yqcai888/easy_dcase_task1, data/meta_dcase_2024/). Per scene it keeps whole 10 s
recordings (all ten 1 s clips of one segment by one device): in split5 the first device-a recording and
the first by one of b, c, s1, s2, s3 (rotating over the scenes), then one recording more in each of split10, split25 and split50
(taken from that split's file, so every line stays in the split it comes from); split100.csv (too large
for that repository) is this folder's split50 lines, as every split50 clip is in split100. In test, three recordings
per scene: one by device a, two by others rotating over the scenes (all eight occur, twice).
"""

import csv
import sys
from pathlib import Path

SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["filename", "scene_label"], path
    return rows[1:]


def recording(filename):  # audio/<scene>-<city>-<loc>-<segment>-<sub>-<device>.wav -> (scene-city-loc-segment, device)
    parts = filename[len("audio/"):-len(".wav")].split("-")
    return "-".join(parts[:4]), parts[5]


def main(source: Path, out: Path) -> None:
    files = {s: read(source / f"split{s}.csv") for s in (5, 10, 25, 50)}
    chosen, lines = set(), {}
    for split in (5, 10, 25, 50):
        keep = set(chosen)
        for scene in SCENES:
            recs = list(dict.fromkeys(recording(f) for f, lab in files[split] if lab == scene))
            new = [r for r in recs if r not in chosen]
            if split == 5:
                keep.add(next(r for r in new if r[1] == "a"))
                keep.add(next(r for r in new if r[1] == DEVICES[1 + SCENES.index(scene) % 5]))
            else:
                keep.add(new[0])
        chosen = keep
        lines[split] = [row for row in files[split] if recording(row[0]) in chosen]
    lines[100] = lines[50]
    test, picked = read(source / "test.csv"), set()
    for i, scene in enumerate(SCENES):
        want = {"a", DEVICES[1 + i % 8], DEVICES[1 + (i + 5) % 8]}
        recs = list(dict.fromkeys(recording(f) for f, lab in test if lab == scene))
        picked |= {next(r for r in recs if r[1] == device) for device in want}
    lines["test"] = [row for row in test if recording(row[0]) in picked]
    for name, rows in lines.items():
        path = out / (f"split{name}.csv" if name != "test" else "test.csv")
        path.write_text("filename\tscene_label\n" + "".join(f"{f}\t{lab}\n" for f, lab in rows))
        print(f"{path.name}: {len(rows)} lines")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent)
