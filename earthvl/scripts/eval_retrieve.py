"""Image-text retrieval recall (R@1/5/10/20 both ways, mean recall) with a CLIP model: `earthvl eval retrieve`.

    earthvl eval retrieve --model out/clip --dataset gaia --out results/clip-gaia-retrieval.json
"""

from earthvl.scripts._eval_task import task_script

make_parser, main = task_script("retrieve", "Image-text retrieval recall (R@1/5/10/20 both ways, mean recall) with a CLIP model.")
