"""Choose among carve-selected checkpoints without a test split: top-1 on the carve against two annotations.

For each checkpoint (all from runs on the same carve), prints its top-1 on the carved validation
faces against FER2013's labels and against FERPlus's majority vote of the same faces (the votes
in train.npz; faces with a tie or a contempt/unknown/not-a-face majority are left out), and their
mean: the rule that picked ``edgenet2`` (train/README.md, "Runs"). Never reads PublicTest.

    python benchmarks/carve_selection.py train/runs/A/best.pth train/runs/B/best.pth ...
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_cards as mc
from edgefer.train.adjust import carve_of, decide, logits_of
from edgefer.train.data import to_tensor
from edgefer.train.engine import load_trained

torch.set_num_threads(2)
val = None
for c in sys.argv[1:]:
    model, side = load_trained(c)
    if val is None:
        _, val = carve_of(side)  # the run's own data and carve, checked against its recorded rows
        with np.load(side["training"]["data"], allow_pickle=False) as d:
            votes, cols = d["ferplus_votes"], [str(c_) for c_ in d["ferplus_columns"]]
        keep, names = mc.majority_rows(votes[val.rows], cols)
        fp = np.array([side["classes"].index(n) for n in names])
        x = to_tensor(val, side["input"]["size"], side["input"]["color"])
    mean = torch.tensor(side["input"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(side["input"]["std"]).view(1, -1, 1, 1)
    p, m = logits_of(model.to(memory_format=torch.channels_last), x, mean, std)
    pred = decide(p, m if side.get("tta") == "flip" else None, np.zeros(p.shape[1]))
    a = 100 * (pred == val.labels).mean()
    b = 100 * (pred[keep] == fp).mean()
    print(f"{c}: carve FER2013 labels {a:.2f}%  carve FERPlus majority {b:.2f}% ({len(keep)} faces)  mean {(a + b) / 2:.2f}")
