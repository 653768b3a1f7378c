"""The earthvl demo (a Gradio app for a Hugging Face Space or `earthvl demo`): `app` builds and serves the page,
`gallery` makes the image galleries its retrieval tab searches."""
