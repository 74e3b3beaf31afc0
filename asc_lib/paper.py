"""Published facts the book compares against, in one place (sources: the paper, the DCASE2024 Task 1
baseline's README, the TAU22 dataset). Numbers not published are not here: the book says *unknown*."""

PAPER_BEST_MEAN = 56.7  # Cai, Li & Shao, best system, average accuracy (%); dev-test or evaluation: unknown

TAU22_CLIPS = 230_350
TRAIN_CLIPS = {5: 6_980, 10: 13_960, 25: 34_900, 50: 69_800, 100: 139_620}
TEST_CLIPS = 29_680
SPLIT5_DEVICE_CLIPS = {"a": 5_080, "b": 380, "c": 380, "s1": 380, "s2": 380, "s3": 380}

# DCASE2024 Task 1 baseline (simplified CP-Mobile, 61,148 parameters, 29.42 M MACs), dev-test macro accuracy (%)
BASELINE_ACC = {5: 42.40, 10: 45.29, 25: 50.29, 50: 53.19, 100: 56.99}
BASELINE_DEVICE_ACC = {
    5: {"a": 54.45, "b": 45.73, "c": 48.42, "s1": 39.66, "s2": 36.13, "s3": 44.30, "s4": 38.90, "s5": 40.47, "s6": 33.58},
    100: {"a": 67.17, "b": 59.67, "c": 61.99, "s1": 56.28, "s2": 55.69, "s3": 58.16, "s4": 53.05, "s5": 52.35, "s6": 48.58},
}

# The real setting's proportions (the miniature keeps them; see results.miniature)
AS2M_CLIPS = 2_000_000  # AudioSet AS-2M, BEATs' pre-training audio: about 2 M clips of 10 s (about 5,700 h)
AS2M_SECONDS = 10 * AS2M_CLIPS
AS2M_CLASSES = 527
BEATS_PARAMS = 90_000_000  # BEATs (about 90 M parameters)
TEACHER_EPOCHS = 30  # the authors' teachers are fine-tuned for 30 epochs
STUDENT_EPOCHS = 150  # the authors train TF-SepNet for 150 epochs on every split
