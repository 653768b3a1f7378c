"""Caption a test split and score the captions (COCO toolkit and HF protocols): `earthvl eval caption`.

    earthvl eval caption --model out/blip2 --dataset gaia --out results/blip2-gaia.json
"""

from earthvl.scripts._eval_task import task_script

make_parser, main = task_script("caption", "Caption a test split and score the captions (COCO toolkit and HF protocols).")
