"""Caption a test split and score the captions (COCO toolkit and HF protocols): `earthvl eval caption`.

    earthvl eval caption --model out/blip2 --dataset gaia --out results/blip2-gaia.json
"""

from earthvl.scripts.evaluate import task_script

make_parser, main = task_script("caption", "Caption a test split and score the captions (COCO toolkit and HF protocols).")
