"""COCO-17 keypoint layout as data: names, left/right flip pairs, skeleton edges and colours."""

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# (left, right) index pairs swapped when an image is mirrored.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_index(num_joints: int = NUM_KEYPOINTS) -> list[int]:
    """Permutation that maps joint j of a mirrored image to joint j of the original."""
    index = list(range(num_joints))
    for left, right in FLIP_PAIRS:
        index[left], index[right] = right, left
    return index


# Per-joint OKS sigmas from the COCO keypoint evaluation (pycocotools cocoeval).
OKS_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

# Side of each joint, used to colour the skeleton: "left", "right" or "center".
JOINT_SIDE = tuple(
    "left" if name.startswith("left") else "right" if name.startswith("right") else "center"
    for name in KEYPOINT_NAMES
)

# Skeleton edges (0-based), the COCO annotation skeleton, each with the side it belongs to.
SKELETON = (
    (15, 13, "left"), (13, 11, "left"), (16, 14, "right"), (14, 12, "right"),
    (11, 12, "center"), (5, 11, "left"), (6, 12, "right"), (5, 6, "center"),
    (5, 7, "left"), (6, 8, "right"), (7, 9, "left"), (8, 10, "right"),
    (1, 2, "center"), (0, 1, "left"), (0, 2, "right"), (1, 3, "left"), (2, 4, "right"),
    (3, 5, "left"), (4, 6, "right"),
)

# Short joint names for labels where space is tight (the heatmap tiles).
JOINT_LABELS = (
    "nose", "L eye", "R eye", "L ear", "R ear",
    "L shldr", "R shldr", "L elbow", "R elbow",
    "L wrist", "R wrist", "L hip", "R hip",
    "L knee", "R knee", "L ankle", "R ankle",
)

# The one palette every overlay colour comes from, BGR (OpenCV order). Okabe & Ito's eight colours
# (2008) stay distinguishable under the common colour-vision deficiencies, unlike red against green.
# White and grey are added for the neutral parts.
PALETTE = {
    "black": (0, 0, 0),
    "orange": (0, 159, 230),
    "sky_blue": (233, 180, 86),
    "bluish_green": (115, 158, 0),
    "yellow": (66, 228, 240),
    "blue": (178, 114, 0),
    "vermillion": (0, 94, 213),
    "reddish_purple": (167, 121, 204),
    "white": (255, 255, 255),
    "grey": (153, 153, 153),
}

# Colours per side: left orange, right sky blue, centre white, so a mirrored or swapped pose shows.
SIDE_COLORS = {"left": PALETTE["orange"], "right": PALETTE["sky_blue"], "center": PALETTE["white"]}
