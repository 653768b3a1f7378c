"""Zero-shot scene classification: CLIP prompt ensembles or a VLM answering GeoChat's prompt: `earthvl eval classify`.

    earthvl eval classify --model openai/clip-vit-base-patch32 --dataset eurosat --out results/clip-eurosat.json
"""

from earthvl.scripts._eval_task import task_script

make_parser, main = task_script("classify", "Zero-shot scene classification: CLIP prompt ensembles or a VLM answering GeoChat's prompt.")
