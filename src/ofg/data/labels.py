"""Label tables of the paper's real datasets and the IXI label-space mapping.

- IXI (TransMorph release) stores FreeSurfer aseg IDs. The reference protocol maps them through a
  46-entry table to indices 0..45 (``IXI_FREESURFER_TABLE[i]`` becomes ``i``; IDs outside the table
  become 0) and scores Dice over 30 of those indices (``IXI_VOI_INDICES``). The IXI loader hands out
  labels in this 46-index space.
- OASIS (Learn2Reg 2021 task 3): labels 1..35 of the neurite-oasis "seg35" protocol.
- LPBA40: 56 LONI structure IDs; Dice over the 54 cortical and subcortical ones (cerebellum 181 and
  brainstem 182 are left out, as in the reference protocol).
- AbdomenCTCT (Learn2Reg 2022): 13 organs, labels 1..13.
"""

from __future__ import annotations

import numpy as np

# FreeSurfer aseg ID -> structure name, for the 46 IDs of the IXI table.
IXI_FREESURFER_NAMES: dict[int, str] = {
    0: "Unknown",
    2: "Left-Cerebral-White-Matter",
    3: "Left-Cerebral-Cortex",
    4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent",
    7: "Left-Cerebellum-White-Matter",
    8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus",
    11: "Left-Caudate",
    12: "Left-Putamen",
    13: "Left-Pallidum",
    14: "3rd-Ventricle",
    15: "4th-Ventricle",
    16: "Brain-Stem",
    17: "Left-Hippocampus",
    18: "Left-Amygdala",
    24: "CSF",
    26: "Left-Accumbens-area",
    28: "Left-VentralDC",
    30: "Left-vessel",
    31: "Left-choroid-plexus",
    41: "Right-Cerebral-White-Matter",
    42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle",
    44: "Right-Inf-Lat-Vent",
    46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex",
    49: "Right-Thalamus",
    50: "Right-Caudate",
    51: "Right-Putamen",
    52: "Right-Pallidum",
    53: "Right-Hippocampus",
    54: "Right-Amygdala",
    58: "Right-Accumbens-area",
    60: "Right-VentralDC",
    62: "Right-vessel",
    63: "Right-choroid-plexus",
    72: "5th-Ventricle",
    77: "WM-hypointensities",
    80: "non-WM-hypointensities",
    85: "Optic-Chiasm",
    251: "CC_Posterior",
    252: "CC_Mid_Posterior",
    253: "CC_Central",
    254: "CC_Mid_Anterior",
    255: "CC_Anterior",
}

# Position i of this table is index i of the label space the IXI pairs use.
IXI_FREESURFER_TABLE: tuple[int, ...] = (
    0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 30, 31, 41, 42, 43, 44, 46,
    47, 49, 50, 51, 52, 53, 54, 58, 60, 62, 63, 72, 77, 80, 85, 251, 252, 253, 254, 255,
)  # fmt: skip

# The 30 VOIs Dice is computed over, as indices into IXI_FREESURFER_TABLE.
IXI_VOI_INDICES: tuple[int, ...] = (
    1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30,
    31, 32, 34, 36,
)  # fmt: skip

# The same 30 VOIs as FreeSurfer IDs.
IXI_VOI_FREESURFER_IDS: tuple[int, ...] = tuple(IXI_FREESURFER_TABLE[i] for i in IXI_VOI_INDICES)

# Index (0..45) -> structure name.
IXI_INDEX_NAMES: dict[int, str] = {i: IXI_FREESURFER_NAMES[fs] for i, fs in enumerate(IXI_FREESURFER_TABLE)}

OASIS_LABEL_NAMES: dict[int, str] = {
    1: "Left-Cerebral-White-Matter",
    2: "Left-Cerebral-Cortex",
    3: "Left-Lateral-Ventricle",
    4: "Left-Inf-Lat-Ventricle",
    5: "Left-Cerebellum-White-Matter",
    6: "Left-Cerebellum-Cortex",
    7: "Left-Thalamus",
    8: "Left-Caudate",
    9: "Left-Putamen",
    10: "Left-Pallidum",
    11: "3rd-Ventricle",
    12: "4th-Ventricle",
    13: "Brain-Stem",
    14: "Left-Hippocampus",
    15: "Left-Amygdala",
    16: "Left-Accumbens",
    17: "Left-VentralDC",
    18: "Left-vessel",
    19: "Left-choroid-plexus",
    20: "Right-Cerebral-White-Matter",
    21: "Right-Cerebral-Cortex",
    22: "Right-Lateral-Ventricle",
    23: "Right-Inf-Lat-Ventricle",
    24: "Right-Cerebellum-White-Matter",
    25: "Right-Cerebellum-Cortex",
    26: "Right-Thalamus",
    27: "Right-Caudate",
    28: "Right-Putamen",
    29: "Right-Pallidum",
    30: "Right-Hippocampus",
    31: "Right-Amygdala",
    32: "Right-Accumbens",
    33: "Right-VentralDC",
    34: "Right-vessel",
    35: "Right-choroid-plexus",
}
OASIS_LABELS: tuple[int, ...] = tuple(range(1, 36))

LPBA_LABEL_NAMES: dict[int, str] = {
    21: "L superior frontal gyrus", 22: "R superior frontal gyrus",
    23: "L middle frontal gyrus", 24: "R middle frontal gyrus",
    25: "L inferior frontal gyrus", 26: "R inferior frontal gyrus",
    27: "L precentral gyrus", 28: "R precentral gyrus",
    29: "L middle orbitofrontal gyrus", 30: "R middle orbitofrontal gyrus",
    31: "L lateral orbitofrontal gyrus", 32: "R lateral orbitofrontal gyrus",
    33: "L gyrus rectus", 34: "R gyrus rectus",
    41: "L postcentral gyrus", 42: "R postcentral gyrus",
    43: "L superior parietal gyrus", 44: "R superior parietal gyrus",
    45: "L supramarginal gyrus", 46: "R supramarginal gyrus",
    47: "L angular gyrus", 48: "R angular gyrus",
    49: "L precuneus", 50: "R precuneus",
    61: "L superior occipital gyrus", 62: "R superior occipital gyrus",
    63: "L middle occipital gyrus", 64: "R middle occipital gyrus",
    65: "L inferior occipital gyrus", 66: "R inferior occipital gyrus",
    67: "L cuneus", 68: "R cuneus",
    81: "L superior temporal gyrus", 82: "R superior temporal gyrus",
    83: "L middle temporal gyrus", 84: "R middle temporal gyrus",
    85: "L inferior temporal gyrus", 86: "R inferior temporal gyrus",
    87: "L parahippocampal gyrus", 88: "R parahippocampal gyrus",
    89: "L lingual gyrus", 90: "R lingual gyrus",
    91: "L fusiform gyrus", 92: "R fusiform gyrus",
    101: "L insular cortex", 102: "R insular cortex",
    121: "L cingulate gyrus", 122: "R cingulate gyrus",
    161: "L caudate", 162: "R caudate",
    163: "L putamen", 164: "R putamen",
    165: "L hippocampus", 166: "R hippocampus",
    181: "cerebellum", 182: "brainstem",
}  # fmt: skip
LPBA_LABELS: tuple[int, ...] = (
    *range(21, 35), *range(41, 51), *range(61, 69), *range(81, 93), 101, 102, 121, 122, *range(161, 167),
)  # fmt: skip

ABDOMEN_LABEL_NAMES: dict[int, str] = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal and splenic vein",
    11: "pancreas",
    12: "left adrenal gland",
    13: "right adrenal gland",
}
ABDOMEN_LABELS: tuple[int, ...] = tuple(range(1, 14))


def map_freesurfer_to_ixi(label: np.ndarray) -> np.ndarray:
    """Map FreeSurfer aseg IDs to the 46-index IXI label space (int16, same shape).

    ``IXI_FREESURFER_TABLE[i]`` becomes ``i``; every ID not in the table becomes 0 (background), as
    in the reference protocol.
    """
    label = np.asarray(label)
    table = np.asarray(IXI_FREESURFER_TABLE, dtype=np.int64)
    ids = label.astype(np.int64, copy=False)
    position = np.clip(np.searchsorted(table, ids), 0, len(table) - 1)
    found = table[position] == ids
    return np.where(found, position, 0).astype(np.int16)
